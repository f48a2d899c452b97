"""The gate's decision rule: a floor for the first model, a strict gain over the champion after."""

from components.evaluate.gate import decide
from seqrank.config import GateConfig


def test_first_model_promoted_only_above_floor() -> None:
    cfg = GateConfig(floor=0.6)
    assert decide(cfg, 0.65, None).promote
    low = decide(cfg, 0.55, None)
    assert not low.promote
    assert "floor 0.6" in low.reason


def test_challenger_must_beat_champion_by_min_delta() -> None:
    cfg = GateConfig(floor=0.6, min_delta=0.002)
    assert decide(cfg, 0.705, 0.700).promote
    assert not decide(cfg, 0.701, 0.700).promote
    assert not decide(cfg, 0.700, 0.700).promote
    assert not decide(cfg, 0.650, 0.700).promote


def test_equal_model_is_not_promoted_even_without_min_delta() -> None:
    decision = decide(GateConfig(min_delta=0.0), 0.7, 0.7)
    assert not decision.promote
    assert "gain +0.0000" in decision.reason
