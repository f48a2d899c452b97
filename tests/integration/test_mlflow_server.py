"""The whole pipeline on a real MLflow tracking server: train, gate and deploy talk to it over HTTP.

The server (`mlflow server` on loopback) has its own backend store and serves artifacts itself,
as on a cluster: the state dir then holds no MLflow database and no model files.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from seqrank.config import load_config
from seqrank.paths import StatePaths
from tests.helpers.pipeline import TINY, generated_logs

pytestmark = [pytest.mark.slow, pytest.mark.mlflow_server]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = (root / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, root / "artifacts"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_pipeline_tracks_gates_and_deploys_through_the_server(mlflow_server, tmp_path: Path) -> None:
    import mlflow

    from pipelines.local import run_local

    url, artifacts = mlflow_server
    cfg = load_config(
        overrides=[
            *TINY,
            "train.epochs=2",
            f"state_dir={tmp_path / 'state'}",
            f"infra.mlflow_tracking_uri={url}",
        ]
    )
    inputs, users, items = generated_logs(cfg, tmp_path / "raw")
    steps = run_local(cfg, inputs, users, items)

    assert steps["gate"]["promote"], steps["gate"]["reason"]
    client = mlflow.MlflowClient(url)
    run = client.get_run(steps["train"]["run_id"])
    assert run.data.tags["gate_decision"] == "promote"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    champion = client.get_model_version_by_alias(cfg.train.registered_model, "champion")
    assert champion.run_id == steps["train"]["run_id"]
    # The model went to the server's artifact store, and nothing of MLflow to the state dir.
    assert any(artifacts.rglob("*.safetensors"))
    paths = StatePaths.of(cfg)
    assert not paths.mlflow_db.exists() and not paths.mlflow_artifacts.exists()
    assert (paths.champion_bundle / "bundle.json").exists()
