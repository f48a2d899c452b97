"""Train step: fit the configured model on an ingest output and record it as one MLflow run."""

from components.train.core import champion_state, run

__all__ = ["champion_state", "run"]
