"""CTR metrics against hand-computed cases and a brute-force pairwise AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import auc, calibration, ctr_metrics, gauc, logloss


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The definition: P(score of a random click > score of a random skip), ties count 1/2."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_auc_hand_computed() -> None:
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auc(np.array([0, 1]), np.array([0.2, 0.9])) == 1.0
    assert auc(np.array([1, 0]), np.array([0.2, 0.9])) == 0.0


def test_auc_counts_ties_as_half() -> None:
    # pairs (click, skip): (.5,.5)=½, (.5,.2)=1, (.9,.5)=1, (.9,.2)=1 → 3.5 / 4
    assert auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == pytest.approx(0.875)
    assert auc(np.array([0, 1, 0, 1, 1]), np.full(5, 0.3)) == pytest.approx(0.5)


def test_auc_undefined_with_one_class() -> None:
    assert math.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))
    assert math.isnan(auc(np.array([0, 0]), np.array([0.1, 0.2])))


def test_auc_matches_pairwise_definition_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=500)
    scores = rng.integers(0, 20, size=500) / 20.0  # heavy ties
    assert auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_gauc_hand_computed() -> None:
    # user 7: AUC 1 over 2 impressions; user 3: clicks {.2,.3} vs skips {.5,.1} → 2/4 over 4;
    # user 9 has no click and is left out. (2·1 + 4·0.5) / 6
    users = np.array([7, 7, 3, 3, 3, 3, 9, 9])
    labels = np.array([1, 0, 1, 0, 0, 1, 0, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.5, 0.1, 0.3, 0.4, 0.6])
    assert gauc(users, labels, scores) == pytest.approx(4 / 6)


def test_gauc_of_one_user_is_auc_and_ties_are_per_user() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=200)
    scores = rng.integers(0, 5, size=200).astype(float)
    assert gauc(np.zeros(200), labels, scores) == pytest.approx(auc(labels, scores), abs=1e-12)

    users = rng.integers(0, 6, size=200)
    expected_num, expected_den = 0.0, 0.0
    for user in np.unique(users):
        rows = users == user
        if 0 < labels[rows].sum() < rows.sum():
            expected_num += rows.sum() * pairwise_auc(labels[rows], scores[rows])
            expected_den += rows.sum()
    assert gauc(users, labels, scores) == pytest.approx(expected_num / expected_den, abs=1e-12)


def test_gauc_undefined_without_a_mixed_user() -> None:
    assert math.isnan(gauc(np.array([1, 2]), np.array([1, 0]), np.array([0.3, 0.4])))


def test_logloss_and_calibration_hand_computed() -> None:
    labels, probs = np.array([1, 0]), np.array([0.8, 0.4])
    assert logloss(labels, probs) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert calibration(labels, probs) == pytest.approx(0.6 / 0.5)
    assert calibration(np.array([0, 1]), np.array([0.2, 0.4])) == pytest.approx(0.6)
    assert math.isnan(calibration(np.array([0, 0]), np.array([0.2, 0.4])))
    assert math.isfinite(logloss(np.array([1, 0]), np.array([0.0, 1.0])))  # clipped, not inf


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="labels has 2 values, scores 3"):
        auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="0 or 1"):
        auc(np.array([0, 2]), np.array([0.1, 0.2]))


def test_ctr_metrics_has_every_metric() -> None:
    metrics = ctr_metrics(np.array([1, 1, 2, 2]), np.array([1, 0, 0, 1]), np.array([0.9, 0.2, 0.3, 0.6]))
    expected_logloss = -(math.log(0.9) + math.log(0.8) + math.log(0.7) + math.log(0.6)) / 4
    assert metrics == {
        "auc": 1.0,
        "gauc": 1.0,
        "logloss": pytest.approx(expected_logloss),
        "calibration": pytest.approx(1.0),
        "n": 4.0,
    }
