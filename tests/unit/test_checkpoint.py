"""Per-epoch checkpoints: a run stopped and resumed ends exactly where an uninterrupted one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqrank.config import ModelConfig, TrainConfig
from tests.helpers.synthetic import write_training_ingest
from training import checkpoint
from training.ingest_data import load_ingest
from training.models import load_model
from training.trainer import fit

MODEL = ModelConfig(name="din", embedding_dim=8, seq_len=10, attention_hidden=[8], mlp_hidden=[16])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    return load_ingest(
        write_training_ingest(tmp_path_factory.mktemp("ckpt") / "ingest", users=60, impressions=20)
    )


def train_cfg(epochs: int, directory: Path | None) -> TrainConfig:
    return TrainConfig(
        epochs=epochs, batch_size=64, lr=5e-3, patience=5, device="cpu", checkpoint_dir=directory
    )


def test_resume_continues_exactly(data, tmp_path: Path) -> None:
    straight = fit(data, MODEL, train_cfg(3, None))

    directory = tmp_path / "ckpt"
    fit(data, MODEL, train_cfg(2, directory))  # "killed" after epoch 2
    assert checkpoint.exists(directory)
    assert sorted(p.name for p in (directory / "last").iterdir()) == [
        "model.json",
        "model.safetensors",
        "trainer_state.pt",
    ]
    resumed = fit(data, MODEL, train_cfg(3, directory), resume=True)

    assert [h["epoch"] for h in resumed.history] == [1.0, 2.0, 3.0]
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["valid_auc"] == pytest.approx(b["valid_auc"], rel=1e-6)
    assert resumed.best_epoch == straight.best_epoch
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
    # best/ holds the model fit returned, loadable like any saved model.
    best = load_model(directory / "best")
    for a, b in zip(best.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_refuses_a_checkpoint_of_another_model(data, tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    fit(data, MODEL, train_cfg(1, directory))
    other = MODEL.model_copy(update={"embedding_dim": 4})
    with pytest.raises(ValueError, match="written for another model or config"):
        fit(data, other, train_cfg(2, directory), resume=True)
