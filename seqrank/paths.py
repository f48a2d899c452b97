"""Where local state lives: everything under one state directory (default `.seqrank/`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatePaths:
    """Every path a step reads or writes under the state directory; creates nothing by itself."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def raw(self) -> Path:
        """Generated raw logs (when no input is given)."""
        return self.root / "raw"

    @property
    def runs(self) -> Path:
        """Per pipeline run outputs: runs/<run_id>/{ingest,...}."""
        return self.root / "runs"

    @property
    def vocab(self) -> Path:
        """The append-only vocab shared by every run, so ids keep their index."""
        return self.root / "vocab"

    @property
    def accepted_validation(self) -> Path:
        """The data profile of the last run that passed validation; drift is measured against it."""
        return self.root / "validation" / "accepted"

    @property
    def kfp_root(self) -> Path:
        return self.root / "kfp"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def feast(self) -> Path:
        """Feast repo config, registry and SQLite online store."""
        return self.root / "feast"

    @property
    def serving(self) -> Path:
        """Exported serving bundles; `champion/` is what the service loads."""
        return self.root / "serving"

    @property
    def request_log(self) -> Path:
        """Sampled ranking requests with their features (`seqrank audit skew` reads them)."""
        return self.serving / "requests"

    @property
    def champion_bundle(self) -> Path:
        return self.serving / "champion"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id


def keep_state_local(paths: StatePaths) -> None:
    """Point the libraries' own caches into the state dir and switch off their telemetry.

    MLflow writes an installation id and matplotlib a font cache under $HOME otherwise; the steps
    run in subprocesses, which inherit this environment.
    """
    os.environ.setdefault("MPLCONFIGDIR", str(paths.root / "cache" / "matplotlib"))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
