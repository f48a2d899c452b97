"""CTR metrics in pure numpy: AUC, GAUC (DIN's impression-weighted user AUC), logloss, calibration."""

from __future__ import annotations

import numpy as np


def _as_arrays(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels has {labels.size} values, scores {scores.size}")
    if labels.size and not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return labels, scores


def _tie_averaged_ranks(
    order_keys: tuple[np.ndarray, ...], scores: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """1-based rank of each value within its group, ties sharing their average rank.

    `order_keys` is passed to np.lexsort (last key primary) and must sort by (group, score).
    """
    order = np.lexsort(order_keys)
    sorted_scores = scores[order]
    sorted_groups = groups[order]
    n = len(order)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = sorted_groups[1:] != sorted_groups[:-1]
    new_tie = new_group.copy()
    new_tie[1:] |= sorted_scores[1:] != sorted_scores[:-1]
    # Position within the group, 1-based.
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    position = np.arange(n) - group_start + 1
    # Average of the positions in each run of ties: (first + last) / 2.
    tie_id = np.cumsum(new_tie) - 1
    tie_first = position[new_tie]
    tie_last = np.append(position[np.flatnonzero(new_tie)[1:] - 1], position[-1]) if n else tie_first
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = ((tie_first + tie_last) / 2.0)[tie_id]
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with tie-averaged ranks; a tie counts one half).

    Returns NaN when either class is absent, where AUC is undefined.
    """
    labels, scores = _as_arrays(labels, scores)
    positives = labels.sum()
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    zeros = np.zeros(labels.size, dtype=np.int64)
    ranks = _tie_averaged_ranks((scores, zeros), scores, zeros)
    u = ranks[labels == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Group AUC as in DIN (Zhou et al. 2018, section Metrics): per-user AUC weighted by impressions.

    Σ_u n_u · AUC_u / Σ_u n_u over users who have both a click and a non-click; other users'
    AUC is undefined and they are left out. Returns NaN when no user qualifies.
    """
    labels, scores = _as_arrays(labels, scores)
    users = np.asarray(users).reshape(-1)
    if users.shape != labels.shape:
        raise ValueError(f"users has {users.size} values, labels {labels.size}")
    if labels.size == 0:
        return float("nan")
    _, group = np.unique(users, return_inverse=True)
    group = group.reshape(-1)
    ranks = _tie_averaged_ranks((scores, group), scores, group)
    n = np.bincount(group).astype(np.float64)
    positives = np.bincount(group, weights=labels)
    negatives = n - positives
    positive_rank_sum = np.bincount(group, weights=ranks * labels)
    valid = (positives > 0) & (negatives > 0)
    if not valid.any():
        return float("nan")
    u = positive_rank_sum[valid] - positives[valid] * (positives[valid] + 1) / 2.0
    per_user = u / (positives[valid] * negatives[valid])
    return float((per_user * n[valid]).sum() / n[valid].sum())


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probabilities are clipped to [eps, 1 − eps]."""
    labels, probs = _as_arrays(labels, probs)
    if labels.size == 0:
        return float("nan")
    p = np.clip(probs, eps, 1.0 - eps)
    return float(-np.mean(labels * np.log(p) + (1.0 - labels) * np.log1p(-p)))


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean predicted CTR over observed CTR: 1 is calibrated, above 1 over-predicts clicks.

    NaN when there is no click to compare with.
    """
    labels, probs = _as_arrays(labels, probs)
    observed = labels.mean() if labels.size else 0.0
    if observed == 0:
        return float("nan")
    return float(probs.mean() / observed)


def ctr_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Every metric at once: auc, gauc, logloss, calibration, n."""
    return {
        "auc": auc(labels, probs),
        "gauc": gauc(users, labels, probs),
        "logloss": logloss(labels, probs),
        "calibration": calibration(labels, probs),
        "n": float(np.asarray(labels).size),
    }
