"""Validation step: Great Expectations suites over the ingest outputs."""

from components.validate.core import Failure, ValidationFailed, accept, run, run_features

__all__ = ["Failure", "ValidationFailed", "accept", "run", "run_features"]
