"""The train step: one MLflow run under the state dir with params, metrics, tags, plot and model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from seqrank.config import PipelineConfig, from_dict
from seqrank.paths import StatePaths
from tests.helpers.synthetic import write_training_ingest


@pytest.fixture(scope="module")
def ingest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_ingest(tmp_path_factory.mktemp("train") / "ingest", users=80, impressions=30)


def tiny_config(state_dir: Path) -> PipelineConfig:
    return from_dict(
        {
            "state_dir": str(state_dir),
            "model": {
                "name": "din",
                "embedding_dim": 8,
                "seq_len": 20,
                "attention_hidden": [16, 8],
                "mlp_hidden": [16],
            },
            "train": {
                "epochs": 2,
                "batch_size": 256,
                "device": "cpu",
                "experiment": "unit-train",
                "patience": 5,
            },
        }
    )


def test_run_records_a_complete_mlflow_run(
    ingest_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from components import tracking, train
    from training.evaluation import evaluate
    from training.ingest_data import load_ingest
    from training.models import load_model

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # MLflow's defaults would write ./mlruns or ./mlflow.db here
    cfg = tiny_config(tmp_path / "state")
    result = train.run(ingest_dir, cfg, tags={"pipeline_run_id": "p-1"})

    assert list(work.iterdir()) == []
    paths = StatePaths.of(cfg)
    assert paths.mlflow_db.exists()
    client = mlflow.MlflowClient(paths.mlflow_uri)
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("din-")
    assert run.info.artifact_uri.startswith(paths.mlflow_artifacts.as_uri())
    assert result["model_uri"] == f"{run.info.artifact_uri}/model"
    assert result["model_name"] == "din"

    params = run.data.params
    assert params["model.name"] == "din"
    assert params["model.attention_hidden"] == "[16, 8]"
    assert params["train.epochs"] == "2"

    manifest_sha = hashlib.sha256((ingest_dir / "manifest.json").read_bytes()).hexdigest()
    assert run.data.tags["data_manifest_sha256"] == manifest_sha
    assert run.data.tags["pipeline_run_id"] == "p-1"

    metrics = run.data.metrics
    for name in ("train_loss", "valid_auc", "valid_gauc", "valid_logloss", "valid_calibration"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name
    for name in (
        "test_auc",
        "test_gauc",
        "test_logloss",
        "test_calibration",
        "best_valid_gauc",
        "best_epoch",
    ):
        assert name in metrics and name in result["metrics"], name
        assert metrics[name] == pytest.approx(result["metrics"][name])

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"model", "plots", "data"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == {
        "model/model.safetensors",
        "model/model.json",
    }
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/learning_curve.png",
        "plots/auc_by_slice.png",
        "plots/calibration.png",
    }
    # Slices: users the train split never saw, and impressions by history length, each with its n.
    assert metrics["world_size"] == 1
    assert metrics["test_short_history_n"] + metrics.get("test_long_history_n", 0) <= metrics["test_n"]
    assert 0 < metrics["test_short_history_n"] < metrics["test_n"]
    assert "test_heavy_users_auc" in metrics and 0 <= metrics["test_heavy_users_auc"] <= 1

    local = tracking.download(result["model_uri"], tmp_path / "download")
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pt"))
    model = load_model(local)
    assert model.spec.name == "din" and model.spec.hparams["seq_len"] == 20
    scored = evaluate(model, load_ingest(ingest_dir), "test")
    assert scored["auc"] == pytest.approx(metrics["test_auc"], abs=1e-6)

    png = tracking.download(f"{run.info.artifact_uri}/plots/learning_curve.png", tmp_path / "plot")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A second run lands in the same experiment.
    again = train.run(ingest_dir, cfg)
    assert client.get_run(again["run_id"]).info.experiment_id == run.info.experiment_id
    assert again["run_id"] != result["run_id"]


def test_run_refuses_data_without_manifest(ingest_dir: Path, tmp_path: Path) -> None:
    import shutil

    from components import train

    copy = tmp_path / "ingest"
    shutil.copytree(ingest_dir, copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no manifest\.json"):
        train.run(copy, tiny_config(tmp_path / "state"))


def test_warm_start_begins_from_the_champion_of_the_same_model(ingest_dir: Path, tmp_path: Path) -> None:
    import mlflow
    from safetensors.torch import load_file

    from components import tracking, train

    cfg = tiny_config(tmp_path / "state")
    first = train.run(ingest_dir, cfg)
    paths = StatePaths.of(cfg)
    client = tracking.client(paths)
    name = cfg.train.registered_model
    client.create_registered_model(name)
    version = client.create_model_version(name, source=first["model_uri"], run_id=first["run_id"])
    client.set_registered_model_alias(name, tracking.CHAMPION_ALIAS, version.version)

    warm = cfg.model_copy(update={"train": cfg.train.model_copy(update={"warm_start": "champion"})})
    state, source = train.champion_state(paths, warm)
    assert source == f"{name}/1"
    champion = load_file(str(tracking.download(first["model_uri"]) / "model.safetensors"))
    assert state is not None and set(state) == set(champion)
    second = train.run(ingest_dir, warm)
    assert (
        mlflow.MlflowClient(paths.mlflow_uri).get_run(second["run_id"]).data.tags["warm_start_from"]
        == f"{name}/1"
    )

    # Another model, or the default (off), trains from scratch.
    other = warm.model_copy(update={"model": warm.model.model_copy(update={"name": "emb_mlp"})})
    assert train.champion_state(paths, other) == (None, None)
    assert train.champion_state(paths, cfg) == (None, None)
