"""Ingest step: raw impression/click logs -> behaviors, examples, vocab through a Beam pipeline."""

from components.ingest.pipeline import IngestRejectedError, run
from components.ingest.reasons import REASONS

__all__ = ["REASONS", "IngestRejectedError", "run"]
