"""Drift between this run's data and the last accepted run's, on the distributions that move CTR."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from seqrank.config import ValidateConfig
from seqrank.storage import read_json, write_json

log = logging.getLogger(__name__)

PROFILE_FILE = "profile.json"
HISTORY_QUANTILES = (0.1, 0.5, 0.9, 0.99)
MAX_POSITION = 20  # positions past this are pooled; slates are rarely longer


def profile(examples: pa.Table) -> dict[str, Any]:
    """The summary a later run is compared with: category mix, CTR overall and by position,
    history-length quantiles and the share of impressions to users with no history yet."""
    category = examples.column("category").to_numpy()
    label = examples.column("label").to_numpy().astype(np.float64)
    position = np.clip(examples.column("position").to_numpy(), 0, MAX_POSITION)
    hist_end = examples.column("hist_end").to_numpy()
    cats, counts = np.unique(category, return_counts=True)
    clicks_by_pos = np.bincount(position, weights=label, minlength=MAX_POSITION + 1)
    shown_by_pos = np.bincount(position, minlength=MAX_POSITION + 1)
    return {
        "examples": len(label),
        "category_mix": {str(c): float(n) / len(label) for c, n in zip(cats, counts, strict=True)},
        "ctr": float(label.mean()),
        "ctr_by_position": {
            str(p): float(clicks_by_pos[p] / shown_by_pos[p]) for p in np.flatnonzero(shown_by_pos)
        },
        "history_quantiles": {
            str(q): float(v)
            for q, v in zip(HISTORY_QUANTILES, np.quantile(hist_end, HISTORY_QUANTILES), strict=True)
        },
        "new_user_share": float(np.mean(hist_end == 0)),
    }


def js_distance(p: dict[str, float], q: dict[str, float]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two categorical distributions."""
    keys = sorted(set(p) | set(q))
    a = np.array([p.get(k, 0.0) for k in keys])
    b = np.array([q.get(k, 0.0) for k in keys])
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return float(np.sqrt(max(0.0, (kl(a) + kl(b)) / 2)))


@dataclass(frozen=True)
class DriftFinding:
    measure: str
    observed: float
    bound: float

    def describe(self) -> str:
        return f"{self.measure}: {self.observed:.4f} exceeds {self.bound}"


def compare(current: dict[str, Any], previous: dict[str, Any], cfg: ValidateConfig) -> list[DriftFinding]:
    """Every measure whose distance from the previous profile passes its configured bound."""
    findings = []
    js = js_distance(current["category_mix"], previous["category_mix"])
    if js > cfg.drift_max_category_js:
        findings.append(DriftFinding("category mix Jensen-Shannon distance", js, cfg.drift_max_category_js))
    ctr_change = abs(current["ctr"] - previous["ctr"]) / max(previous["ctr"], 1e-9)
    if ctr_change > cfg.drift_max_ctr_change:
        findings.append(DriftFinding("CTR relative change", ctr_change, cfg.drift_max_ctr_change))
    shared = set(current["ctr_by_position"]) & set(previous["ctr_by_position"])
    for pos in sorted(shared, key=int):
        before, now = previous["ctr_by_position"][pos], current["ctr_by_position"][pos]
        change = abs(now - before) / max(before, 1e-9)
        if change > cfg.drift_max_ctr_change:
            findings.append(
                DriftFinding(f"CTR at position {pos} relative change", change, cfg.drift_max_ctr_change)
            )
    for q, before in previous["history_quantiles"].items():
        now = current["history_quantiles"].get(q, before)
        change = abs(now - before) / max(before, 1.0)
        if change > cfg.drift_max_history_change:
            findings.append(
                DriftFinding(f"history length q{q} relative change", change, cfg.drift_max_history_change)
            )
    share_change = abs(current["new_user_share"] - previous["new_user_share"])
    if share_change > cfg.drift_max_new_user_share_change:
        findings.append(
            DriftFinding("new-user share absolute change", share_change, cfg.drift_max_new_user_share_change)
        )
    return findings


def load_profile(directory: Path | None) -> dict[str, Any] | None:
    """A saved profile: `directory` may be a validation output or an ingest output."""
    if directory is None:
        return None
    path = Path(directory) / PROFILE_FILE
    return read_json(path) if path.exists() else None


def save_profile(directory: Path, data: dict[str, Any]) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    write_json(Path(directory) / PROFILE_FILE, data)


def examples_profile(examples: pa.Table) -> dict[str, Any]:
    """The profile of an examples table, dropping rows without a label (none are expected)."""
    return profile(examples.filter(pc.is_valid(examples.column("label"))))
