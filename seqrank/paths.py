"""Where shared state lives: under the infra root (default: the state directory, `.seqrank/`).

Steps find the vocab, the drift baseline, the Feast repo, MLflow and the serving bundles through
`StatePaths.of(cfg)`, which reads only the config's `infra` section (and `state_dir` when the infra
root is empty, as on a laptop), so a step on a cluster never sees the submitting machine's paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from seqrank.config import PipelineConfig


@dataclass(frozen=True)
class StatePaths:
    """Every path a step reads or writes under the state directory; creates nothing by itself."""

    root: Path
    tracking_uri: str = ""  # empty: the SQLite file under root
    artifact_root: str = ""  # empty: mlartifacts/ under root (or the tracking server's own)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @classmethod
    def of(cls, cfg: PipelineConfig) -> StatePaths:
        infra = cfg.infra
        return cls(Path(infra.root or cfg.state_dir), infra.mlflow_tracking_uri, infra.mlflow_artifact_root)

    @property
    def raw(self) -> Path:
        """Generated raw logs (when no input is given)."""
        return self.root / "raw"

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
        return self.tracking_uri or f"sqlite:///{self.mlflow_db}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    def experiment_artifacts(self, experiment: str) -> str | None:
        """Artifact location of a new experiment; None lets a tracking server choose its own."""
        if self.artifact_root:
            return f"{self.artifact_root.rstrip('/')}/{experiment}"
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.mlflow_artifacts / experiment).resolve().as_uri()

    @property
    def feast(self) -> Path:
        """The live Feast store (config, registry, SQLite online store): after the first deploy a
        link through `champion_bundle`, so the served model and the live store switch in one rename."""
        return self.root / "feast"

    @property
    def feast_versions(self) -> Path:
        """Feast store versions: each pipeline run's features step stages one here; a release links
        the one it was validated and gated with."""
        return self.root / "feast_versions"

    @property
    def serving(self) -> Path:
        """Exported serving bundles; `champion/` is what the service loads."""
        return self.root / "serving"

    @property
    def request_log(self) -> Path:
        """Sampled ranking requests with their features (`seqrank audit skew` reads them)."""
        return self.serving / "requests"

    @property
    def releases(self) -> Path:
        """One directory per deployed model version: its serving bundle and a link to its store."""
        return self.serving / "releases"

    @property
    def champion_bundle(self) -> Path:
        """The live release: a link into `releases/`, switched atomically by deploy and rollback."""
        return self.serving / "champion"

    @property
    def logs(self) -> Path:
        """One log per local pipeline run: every step's output, which the console leaves out."""
        return self.root / "logs"

    @property
    def reports(self) -> Path:
        """One self-contained HTML report per pipeline run."""
        return self.root / "reports"


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
