"""MLflow access shared by the train, gate and deploy steps: the backend the infra section names.

Locally that is SQLite under the state directory; on a cluster a tracking server over HTTP.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from seqrank.paths import StatePaths

CHAMPION_ALIAS = "champion"


def client(paths: StatePaths):  # -> mlflow.MlflowClient, imported lazily (mlflow is slow to import)
    """A client on the configured backend (SQLite under the root by default); also points the fluent API there."""
    import mlflow

    # Serving and gating never need pickled models; refuse them so a tampered artifact cannot run code.
    os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    paths.root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(paths.mlflow_uri)
    return mlflow.MlflowClient(paths.mlflow_uri)


def experiment_id(paths: StatePaths, name: str) -> str:
    """Get or create `name`; locally its artifacts go under the state dir (MLflow's default is the
    cwd's ./mlruns), on a tracking server where the infra section or the server says."""
    mlflow_client = client(paths)
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=paths.experiment_artifacts(name))


def download(artifact_uri: str, dst: Path | None = None) -> Path:
    """Download an artifact directory (e.g. a run's `model/`) and return its local path."""
    import mlflow.artifacts

    dst = dst or Path(tempfile.mkdtemp(prefix="seqrank-artifact-"))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(dst)))


def run_model_uri(paths: StatePaths, run_id: str) -> str:
    return f"{client(paths).get_run(run_id).info.artifact_uri}/model"


def champion_version(paths: StatePaths, registered_model: str):  # -> ModelVersion | None
    """The model version holding the champion alias, or None before the first promotion."""
    from mlflow.exceptions import MlflowException

    try:
        return client(paths).get_model_version_by_alias(registered_model, CHAMPION_ALIAS)
    except MlflowException:
        return None
