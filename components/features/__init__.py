"""Features step: Feast feature tables, repo apply, online materialization, pushes and lookups."""

from components.features.core import (
    HISTORICAL_FEATURES,
    build_tables,
    historical_features,
    push_behaviors,
    run,
)

__all__ = ["HISTORICAL_FEATURES", "build_tables", "historical_features", "push_behaviors", "run"]
