"""The whole pipeline on tiny generated logs through the kfp local runner, then the real service.

Three runs share one state dir. The second is the compiled YAML, loaded back with kfp, on the
same inputs: ingest and validation come from kfp's cache (so the compiled steps are the ones the
first run built in process), training and the gate run again against the champion. The third's
events file has changed under the same name: the cache misses.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from seqrank.config import load_config
from seqrank.paths import StatePaths
from tests.helpers.pipeline import TINY, generated_logs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory):
    from kfp.components import load_component_from_file

    from pipelines.compile import compile_pipeline
    from pipelines.local import run_local

    root = tmp_path_factory.mktemp("seqrank")
    cfg = load_config(overrides=[*TINY, f"state_dir={root / 'state'}"])
    raw = root / "raw"
    inputs, users, items = generated_logs(cfg, raw)
    runs = {"first": run_local(cfg, inputs, users, items)}
    # Same data again: the challenger now meets a champion and must beat it to be promoted.
    compiled = compile_pipeline(cfg, root / "seqrank.yaml")
    runs["second"] = run_local(cfg, inputs, users, items, pipeline=load_component_from_file(str(compiled)))
    # The events file changes under the same name: its last tenth of lines is dropped.
    lines = (raw / "events.jsonl").read_bytes().splitlines(keepends=True)
    (raw / "events.jsonl").write_bytes(b"".join(lines[: len(lines) * 9 // 10]))
    runs["changed"] = run_local(cfg, inputs, users, items)
    return cfg, StatePaths.of(cfg), runs


def test_every_step_ran_and_model_learned(pipeline_run) -> None:
    _, paths, runs = pipeline_run
    steps = runs["first"]
    assert set(steps) == {
        "ingest",
        "validate",
        "features",
        "validate_features",
        "train",
        "gate",
        "deploy",
        "report",
    }
    manifest = steps["ingest"]
    assert (
        manifest["read"] == manifest["accepted"] + sum(manifest["rejected"].values()) + manifest["duplicates"]
    )

    import mlflow

    client = mlflow.MlflowClient(paths.mlflow_uri)
    run = client.get_run(steps["train"]["run_id"])
    assert run.data.metrics["test_auc"] > 0.6
    assert run.data.tags["pipeline_run"] == steps["train"]["pipeline_run"]
    assert run.data.tags["gate_decision"] == "promote"
    assert not steps["ingest"]["cached"] and not steps["validate"]["cached"]


def test_cache_hits_for_the_same_inputs_and_misses_for_a_changed_file(pipeline_run) -> None:
    _, _, runs = pipeline_run
    first, second, changed = runs["first"], runs["second"], runs["changed"]
    assert second["ingest"]["cached"] and second["validate"]["cached"]
    assert second["ingest"]["output"] == first["ingest"]["output"]
    # Training, the gate and the feature store are never taken from the cache.
    assert second["train"]["run_id"] != first["train"]["run_id"]
    assert second["train"]["pipeline_run"] != first["train"]["pipeline_run"]
    assert not changed["ingest"]["cached"] and not changed["validate"]["cached"]
    assert changed["ingest"]["read"] < first["ingest"]["read"]


def test_champion_alias_and_second_run_gated_against_it(pipeline_run) -> None:
    cfg, paths, runs = pipeline_run
    import mlflow

    client = mlflow.MlflowClient(paths.mlflow_uri)
    champion = client.get_model_version_by_alias(cfg.train.registered_model, "champion")
    first, second, changed = runs["first"], runs["second"], runs["changed"]
    assert second["gate"]["champion_version"] == "1"
    assert second["gate"]["champion_metrics"] is not None
    promoted = [run["train"]["run_id"] for run in (first, second, changed) if run["gate"]["promote"]]
    assert champion.run_id == promoted[-1]
    assert ("deploy" in second) == second["gate"]["promote"]
    bundle = json.loads((paths.champion_bundle / "bundle.json").read_text())
    # The live store is the promoted run's staged one, switched with its bundle in one link.
    assert bundle["feature_store"]["feast_dir"] == str(paths.feast.resolve())
    assert (paths.champion_bundle / "feast").resolve() == paths.feast.resolve()
    last = [run for run in (first, second, changed) if run["gate"]["promote"]][-1]
    assert paths.feast.resolve() == Path(last["features"]["feast_dir"])
    for run in (first, second, changed):
        if not run["gate"]["promote"]:
            assert Path(run["features"]["feast_dir"]) != paths.feast.resolve()


def test_every_run_writes_its_report_and_logs_it(pipeline_run) -> None:
    _, paths, runs = pipeline_run
    import mlflow

    client = mlflow.MlflowClient(paths.mlflow_uri)
    for steps in runs.values():
        report = Path(steps["report"]["path"])
        text = report.read_text()
        for section in ("data", "validation", "drift", "features", "models", "gate", "deploy"):
            assert f'<section id="{section}">' in text, section
        logged = {a.path for a in client.list_artifacts(steps["train"]["run_id"], "report")}
        assert f"report/{report.name}" in logged


def test_user_sequence_in_feast_online_store(pipeline_run) -> None:
    cfg, paths, runs = pipeline_run
    from serving.features import OnlineFeatures

    # The live store is the last promoted run's: a rejected run's staged store never went live.
    promoted = [run for run in (runs["first"], runs["second"], runs["changed"]) if run["gate"]["promote"]]
    data_dir = Path(promoted[-1]["ingest"]["output"])
    behaviors = pq.read_table(data_dir / "behaviors").to_pylist()
    longest = max(behaviors, key=lambda row: len(row["item"]))
    online = OnlineFeatures(paths.feast).user_sequence(longest["user"])
    keep = cfg.features.max_sequence_length
    np.testing.assert_array_equal(online["seq_item"], longest["item"][-keep:])
    np.testing.assert_array_equal(online["seq_ts"], longest["ts"][-keep:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_service_ranks_for_a_generated_user(pipeline_run) -> None:
    import uvicorn

    from serving.app import create_app

    cfg, paths, _ = pipeline_run
    port = _free_port()
    app = create_app(paths.champion_bundle, paths.feast, cfg.serve)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        vocab = pq.read_table(paths.champion_bundle / "vocab" / "item.parquet").column("raw").to_pylist()
        users = pq.read_table(paths.champion_bundle / "vocab" / "user.parquet").column("raw").to_pylist()
        body = {"user_id": users[0], "candidates": vocab[:20]}
        reply = httpx.post(f"http://127.0.0.1:{port}/rank", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        ranked = reply.json()["items"]
        assert sorted(r["item_id"] for r in ranked) == sorted(vocab[:20])
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores, reverse=True)
        assert all(0 < s < 1 for s in scores)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
