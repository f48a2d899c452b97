"""Features step: Feast feature tables, repo apply and online materialization."""

from components.features.core import build_tables, run

__all__ = ["build_tables", "run"]
