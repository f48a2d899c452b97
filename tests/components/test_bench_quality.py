"""The quality benchmark end to end on a small generated log: references, models, gap closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.bench_quality import benchmark_quality, table
from seqrank.config import GeneratorConfig, ModelConfig, TrainConfig

pytestmark = pytest.mark.slow


def test_quality_bench_scores_models_between_popularity_and_oracle(tmp_path: Path) -> None:
    result = benchmark_quality(
        ["emb_mlp"],
        generator=GeneratorConfig(users=150, items=400, categories=12, days=8),
        model_cfg=ModelConfig(embedding_dim=8, seq_len=10, attention_hidden=[8], mlp_hidden=[16]),
        train_cfg=TrainConfig(epochs=1, batch_size=256, device="cpu"),
        work=tmp_path,
    )
    assert result["data"] == "generated"
    assert result["examples"]["test"] > 0
    # The oracle knows the true click probabilities: it must beat a popularity baseline.
    assert 0.5 < result["popularity_auc"] < result["oracle_auc"] <= 1.0
    assert result["oracle_last50_auc"] <= result["oracle_auc"]
    assert result["oracle_revealed_auc"] <= result["oracle_auc"]
    model = result["models"]["emb_mlp"]
    assert 0.0 <= model["auc"] <= 1.0 and model["best_epoch"] == 1
    gap = (model["auc"] - result["popularity_auc"]) / (result["oracle_auc"] - result["popularity_auc"])
    assert model["gap_closed"] == pytest.approx(gap, abs=2e-3)
    revealed = (model["auc"] - result["popularity_auc"]) / (
        result["oracle_revealed_auc"] - result["popularity_auc"]
    )
    assert model["revealed_gap_closed"] == pytest.approx(revealed, abs=2e-3)
    assert result["best_model"] == "emb_mlp"
    assert result["best_revealed_gap_closed"] == model["revealed_gap_closed"]
    rendered = table(result)
    assert "| oracle |" in rendered and "| emb_mlp |" in rendered
    assert "| oracle from what the history reveals |" in rendered

    # A second call reuses the generated logs and the ingest output in `work`.
    (tmp_path / "ingest" / "marker").write_text("kept")
    again = benchmark_quality(["emb_mlp"], train_cfg=TrainConfig(epochs=1, device="cpu"), work=tmp_path)
    assert (tmp_path / "ingest" / "marker").exists() and again["oracle_auc"] == result["oracle_auc"]


def test_unknown_model_is_named() -> None:
    with pytest.raises(ValueError, match="unknown models \\['nope'\\]"):
        benchmark_quality(["nope"])
