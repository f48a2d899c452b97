"""The gate's rules: main-metric gain, no regression on other metrics and slices, latency, floor."""

from __future__ import annotations

import pytest

from components.evaluate.gate import ModelScores, decide
from seqrank.config import GateConfig

SLICES = ("new_users", "heavy_users", "short_history", "long_history")


def scores(
    auc: float = 0.70,
    *,
    gauc: float | None = None,
    logloss: float = 0.40,
    calibration: float = 1.0,
    slice_auc: float | None = None,
    p99: float = 5.0,
    n: int = 1000,
) -> ModelScores:
    """A model's numbers: every slice at `slice_auc` (default: the overall AUC) with `n` impressions."""
    slice_value = auc if slice_auc is None else slice_auc
    return ModelScores(
        metrics={
            "auc": auc,
            "gauc": auc if gauc is None else gauc,
            "logloss": logloss,
            "calibration": calibration,
            "n": 10_000,
        },
        slices={name: {"auc": slice_value, "gauc": slice_value, "n": n} for name in SLICES},
        latency_p99_ms=p99,
        latency_p50_ms=p99 / 2,
    )


def verdicts(decision) -> dict[str, str]:
    return {rule.rule: rule.verdict for rule in decision.rules}


def test_better_challenger_is_promoted_with_every_rule_passing() -> None:
    decision = decide(GateConfig(min_delta=0.002), scores(0.71), scores(0.70))
    assert decision.promote, decision.reason
    assert set(verdicts(decision).values()) == {"pass"}
    assert {"auc_gain", "gauc", "logloss", "calibration_error", "floor", "latency_p99_ms"} <= set(
        verdicts(decision)
    )
    assert {f"slice_{name}_auc" for name in SLICES} <= set(verdicts(decision))


@pytest.mark.parametrize(
    ("challenger", "failed"),
    [
        (scores(0.69), "auc_gain"),  # worse
        (scores(0.70), "auc_gain"),  # equal is not better, even with min_delta 0
        (scores(0.71, gauc=0.69), "gauc"),  # the other ranking metric regresses
        (scores(0.71, logloss=0.45), "logloss"),
        (scores(0.71, calibration=1.3), "calibration_error"),
        (scores(0.71, slice_auc=0.65), "slice_new_users_auc"),  # a slice regresses
        (scores(0.71, p99=80.0), "latency_p99_ms"),  # slower than the budget
    ],
)
def test_a_challenger_failing_any_rule_is_not_promoted(challenger: ModelScores, failed: str) -> None:
    decision = decide(GateConfig(min_delta=0.0), challenger, scores(0.70))
    assert not decision.promote
    assert verdicts(decision)[failed] == "fail"
    assert decision.reason.startswith("reject: ")


def test_calibration_is_judged_by_its_distance_from_one() -> None:
    # 0.9 -> 1.05 moves calibration by 0.15 but brings it closer to 1: no regression.
    decision = decide(GateConfig(), scores(0.71, calibration=1.05), scores(0.70, calibration=0.9))
    assert verdicts(decision)["calibration_error"] == "pass"


def test_small_slices_are_shown_not_judged() -> None:
    decision = decide(GateConfig(min_slice_examples=200), scores(0.71, slice_auc=0.5, n=50), scores(0.70))
    assert decision.promote, decision.reason
    assert verdicts(decision)["slice_long_history_auc"] == "skip"


def test_first_model_with_and_without_a_floor() -> None:
    low = decide(GateConfig(floor=0.75), scores(0.70), None)
    assert not low.promote
    assert verdicts(low) == {"floor": "fail", "latency_p99_ms": "pass"}
    assert "floor 0.75" in low.reason
    assert decide(GateConfig(floor=0.0), scores(0.55), None).promote
    assert decide(GateConfig(floor=0.6), scores(0.70), None).promote


def test_first_model_must_meet_the_latency_budget() -> None:
    decision = decide(GateConfig(floor=0.0, latency_budget_ms=10), scores(0.8, p99=12.0), None)
    assert not decision.promote
    assert "budget 10" in decision.reason


def test_an_incompatible_champion_rejects_or_falls_back_to_the_floor() -> None:
    why = "the champion's item vocab is no prefix of today's (ids were renumbered)"
    rejected = decide(GateConfig(on_incompatible="reject"), scores(0.9), None, cannot_compare=why)
    assert not rejected.promote
    assert verdicts(rejected)["champion"] == "fail"
    assert f"cannot compare: {why}" in rejected.reason

    on_floor = decide(GateConfig(on_incompatible="floor", floor=0.6), scores(0.9), None, cannot_compare=why)
    assert on_floor.promote
    assert verdicts(on_floor)["champion"] == "skip"
    assert (
        decide(GateConfig(on_incompatible="floor", floor=0.95), scores(0.9), None, cannot_compare=why).promote
        is False
    )


def test_gauc_as_main_metric_judges_auc_as_the_other() -> None:
    decision = decide(GateConfig(metric="gauc"), scores(0.70, gauc=0.72), scores(0.70, gauc=0.70))
    assert verdicts(decision)["gauc_gain"] == "pass"
    assert verdicts(decision)["auc"] == "pass"
    assert decision.promote


def _small_din():
    from training.models import ModelSpec, build_model

    hparams = {"embedding_dim": 8, "seq_len": 20, "attention_hidden": [16], "mlp_hidden": [16]}
    return build_model(ModelSpec("din", hparams, {"user": 50, "item": 200, "category": 10}))


def test_a_latency_breach_is_timed_again_and_each_model_keeps_its_best_round() -> None:
    from components.evaluate.gate import time_models
    from seqrank.config import from_dict

    models = {"challenger": _small_din(), "champion": _small_din()}

    def timed(budget_ms: float):
        gate = {"latency_budget_ms": budget_ms, "latency_requests": 20, "latency_rounds": 3}
        cfg = from_dict({"gate": {**gate, "latency_candidates": 50, "latency_history": 100}})
        return time_models(cfg, models)

    within = timed(1e6)
    assert {t.rounds for t in within.values()} == {1}
    over = timed(1e-6)  # no round can meet it: every round is timed, and the model still fails
    assert {t.rounds for t in over.values()} == {3}
    for timing in over.values():
        assert 0 < timing.p50_ms <= timing.p99_ms
    challenger = ModelScores(scores().metrics, latency_p99_ms=over["challenger"].p99_ms, latency_rounds=3)
    decision = decide(GateConfig(floor=0.0, latency_budget_ms=1e-6), challenger, None)
    assert not decision.promote
    assert "best of 3 rounds" in decision.reason


def test_latency_is_timed_on_the_services_runtime_and_leaves_the_models_as_they_were(monkeypatch) -> None:
    from components.evaluate.gate import time_models
    from seqrank.config import from_dict
    from serving import runtime

    models = {"challenger": _small_din()}
    calls = []
    served = runtime.UnitSession.scores

    def counted(self, query, kernel):
        calls.append(query.shape[0])
        return served(self, query, kernel)

    monkeypatch.setattr(runtime.UnitSession, "scores", counted)
    gate = {"latency_requests": 20, "latency_rounds": 1, "latency_candidates": 30, "latency_history": 40}
    time_models(from_dict({"gate": gate}), models)
    assert calls and set(calls) == {30}  # every timed request went through ONNX Runtime
    assert runtime.session_of(models["challenger"].attention) is None  # sessions dropped after
    calls.clear()
    time_models(from_dict({"gate": gate, "serve": {"runtime": "torch"}}), models)
    assert calls == []
