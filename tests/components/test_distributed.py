"""Distributed data parallel training: `seqrank train` under torchrun with 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from seqrank.paths import StatePaths
from tests.helpers.synthetic import write_training_ingest
from training.evaluation import slice_masks
from training.ingest_data import load_ingest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ingest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_ingest(tmp_path_factory.mktemp("ddp") / "ingest", users=120, impressions=30)


def test_two_process_ddp_run_trains_in_step_and_records_one_mlflow_run(
    ingest_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    overrides = {
        "state_dir": str(state),
        "model.embedding_dim": 8,
        "model.seq_len": 20,
        "model.attention_hidden": "[16, 8]",
        "model.mlp_hidden": "[32, 16]",
        "train.epochs": 3,
        "train.batch_size": 64,
        "train.lr": 0.005,
        "train.device": "cpu",
        "train.experiment": "ddp",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "seqrank.cli",
        "train",
        "--model",
        "din",
        "--data",
        str(ingest_dir),
        *[arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]

    # Rank 0 prints the MLflow result, rank 1 its replica's metrics; both trained the same model.
    outputs = [json.loads(block) for block in _json_blocks(done.stdout)]
    main = next(o for o in outputs if "run_id" in o)
    replica = next(o for o in outputs if o.get("rank") == 1)
    assert replica["metrics"]["test_auc"] == pytest.approx(main["metrics"]["test_auc"], abs=1e-9)

    client = mlflow.MlflowClient(StatePaths(state).mlflow_uri)
    experiment = client.get_experiment_by_name("ddp")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # only rank 0 records
    metrics = runs[0].data.metrics
    assert metrics["world_size"] == 2
    assert metrics["test_auc"] > 0.65  # the history signal is learned from the two shards (chance: 0.5)


def _json_blocks(text: str) -> list[str]:
    # `seqrank train` prints one indented JSON object per process; split them apart.
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("{"):
            current = [line]
        elif current:
            current.append(line)
            if line.startswith("}"):
                blocks.append("\n".join(current))
                current = []
    return blocks


def test_slice_masks_by_hand(ingest_dir: Path) -> None:
    data = load_ingest(ingest_dir)
    train, test = data.split("train"), data.split("test")
    masks = slice_masks(test, train)
    seen = np.isin(test.user, train.user)
    assert (masks["new_users"] == ~seen).all()
    assert (masks["short_history"] == (test.hist_end < 10)).all()
    assert (masks["long_history"] == (test.hist_end >= 100)).all()
    counts = np.bincount(train.user)
    threshold = np.quantile(counts[counts > 0], 0.9)
    assert (
        masks["heavy_users"] == (seen & (counts[np.minimum(test.user, len(counts) - 1)] >= threshold))
    ).all()
    assert masks["heavy_users"].any() and not (masks["heavy_users"] & masks["new_users"]).any()
