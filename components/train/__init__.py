"""Train step: fit the configured model on an ingest output and record it as one MLflow run."""

from components.train.core import run

__all__ = ["run"]
