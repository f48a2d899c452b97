"""The gate: score challenger and champion on the same test data; promote only a better model."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components import tracking
from seqrank.config import GateConfig, PipelineConfig
from seqrank.paths import StatePaths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None


def decide(cfg: GateConfig, challenger: float, champion: float | None) -> GateDecision:
    """Promote the first model above the floor; later ones only when they beat the champion."""
    if champion is None:
        ok = challenger >= cfg.floor
        reason = f"first model: {cfg.metric} {challenger:.4f} {'>=' if ok else '<'} floor {cfg.floor}"
        return GateDecision(ok, reason, cfg.metric, challenger, None)
    gain = challenger - champion
    ok = gain > cfg.min_delta and challenger >= cfg.floor
    reason = (
        f"challenger {cfg.metric} {challenger:.4f} vs champion {champion:.4f} "
        f"(gain {gain:+.4f}, needs > {cfg.min_delta} and >= floor {cfg.floor})"
    )
    return GateDecision(ok, reason, cfg.metric, challenger, champion)


def run(data_dir: Path, challenger_run_id: str, cfg: PipelineConfig) -> dict[str, Any]:
    """Evaluate both models on this run's test split, record the decision on the challenger's run."""
    from training.evaluation import evaluate
    from training.ingest_data import load_ingest
    from training.models import load_model

    paths = StatePaths.of(cfg)
    client = tracking.client(paths)
    data = load_ingest(data_dir)

    challenger = load_model(tracking.download(tracking.run_model_uri(paths, challenger_run_id)))
    challenger_metrics = evaluate(challenger, data, "test")

    champion_metrics = None
    version = tracking.champion_version(paths, cfg.train.registered_model)
    if version is not None:
        champion = load_model(tracking.download(version.source))
        # The champion may predate ids appended to the vocab since; it scores them as unknown.
        champion_metrics = evaluate(champion, data.restricted_to(champion.spec.vocab_sizes), "test")

    decision = decide(
        cfg.gate,
        challenger_metrics[cfg.gate.metric],
        None if champion_metrics is None else champion_metrics[cfg.gate.metric],
    )
    for name, value in challenger_metrics.items():
        client.log_metric(challenger_run_id, f"gate_challenger_{name}", float(value))
    if champion_metrics is not None:
        for name, value in champion_metrics.items():
            client.log_metric(challenger_run_id, f"gate_champion_{name}", float(value))
    client.set_tag(challenger_run_id, "gate_decision", "promote" if decision.promote else "reject")
    client.set_tag(challenger_run_id, "gate_reason", decision.reason)
    log.info("gate: %s (%s)", "promote" if decision.promote else "reject", decision.reason)
    return {
        **asdict(decision),
        "challenger_run_id": challenger_run_id,
        "champion_version": None if version is None else str(version.version),
        "challenger_metrics": challenger_metrics,
        "champion_metrics": champion_metrics,
    }
