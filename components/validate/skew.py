"""Training/serving skew audit: recompute logged serving features offline, as of each request, and
compare the distribution of each feature in the training examples with the served one."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.validate.failures import Failure
from seqrank.config import ValidateConfig

log = logging.getLogger(__name__)

SEQUENCE = {"seq_item": "item", "seq_category": "category", "seq_ts": "ts"}
CATEGORY_SEQUENCE = {"cat_seq_item": "item", "cat_seq_ts": "ts"}
# The features whose distributions are compared, as TFDV compares them: L-infinity distance for
# categorical ones (the ids in the history the model reads), Jensen-Shannon divergence for
# numeric ones (how long that history is, how old its latest behavior).
CATEGORICAL = {"seq_item": "item", "seq_category": "category"}
NUMERIC = ("history_length", "last_behavior_age_hours")
HOUR_MS = 3_600_000
EXACT_BINS = 100  # numeric features with at most this many distinct values get a bin per value
QUANTILE_BINS = 20  # otherwise bins between quantiles of both samples together


def read_log(log_dir: Path) -> Iterator[dict[str, Any]]:
    """Every logged request under `log_dir` (requests-*.jsonl), in file order."""
    for path in sorted(Path(log_dir).glob("requests-*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def _behaviors(ingest_dir: Path, users: set[int]) -> dict[int, dict[str, np.ndarray]]:
    table = pq.read_table(Path(ingest_dir) / "behaviors", columns=["user", "item", "category", "ts"])
    table = table.filter(pc.is_in(table.column("user"), value_set=pc.cast(list(users), "int64")))
    return {
        row["user"]: {k: np.asarray(row[k], dtype=np.int64) for k in ("item", "category", "ts")}
        for row in table.to_pylist()
    }


def audit(
    log_dir: Path,
    ingest_dir: Path,
    category_k: int,
    examples: int = 5,
    validate_cfg: ValidateConfig | None = None,
) -> dict[str, Any]:
    """Mismatch rate per feature between what serving logged and what the offline behaviors give,
    and the distance of each feature's served distribution from its training one.

    For a request at time t, the offline view of a user's history is the behaviors with ts < t;
    the sequence features are its last `seq_len` (as logged by the service), the category
    sub-sequence its last `category_k` in the logged category. The distances (`distribution`)
    are judged against `validate_cfg`'s skew thresholds; `failures` lists those passed.
    """
    cfg = validate_cfg if validate_cfg is not None else ValidateConfig()
    requests = list(read_log(log_dir))
    offline = _behaviors(ingest_dir, {int(r["user"]) for r in requests})
    empty = {k: np.zeros(0, dtype=np.int64) for k in ("item", "category", "ts")}
    mismatches = dict.fromkeys([*SEQUENCE, *CATEGORY_SEQUENCE], 0)
    found: list[dict[str, Any]] = []
    for request in requests:
        history = offline.get(int(request["user"]), empty)
        before = int(np.searchsorted(history["ts"], request["ts"], side="left"))
        expected = {name: history[col][:before][-request["seq_len"] :] for name, col in SEQUENCE.items()}
        in_category = history["category"][:before] == request["category"]
        expected |= {
            name: history[col][:before][in_category][-category_k:] for name, col in CATEGORY_SEQUENCE.items()
        }
        served = {**request["features"], **request.get("category_features", {})}
        for name, offline_values in expected.items():
            online_values = np.asarray(served.get(name, []), dtype=np.int64)
            if not np.array_equal(online_values, offline_values):
                mismatches[name] += 1
                if len(found) < examples:
                    found.append(
                        {
                            "user_id": request["user_id"],
                            "ts": request["ts"],
                            "feature": name,
                            "served_len": len(online_values),
                            "offline_len": len(offline_values),
                        }
                    )
    n = len(requests)
    distribution, failures = distribution_skew(requests, ingest_dir, cfg)
    report = {
        "requests": n,
        "mismatch_rate": {name: (count / n if n else 0.0) for name, count in mismatches.items()},
        "mismatches": mismatches,
        "examples": found,
        "distribution": distribution,
        "failures": [f.describe() for f in failures],
    }
    log.info("skew audit over %d requests: %s", n, report["mismatch_rate"])
    return report


def linf_distance(p: np.ndarray, q: np.ndarray) -> float:
    """L-infinity distance between two categorical distributions given as counts over the same values."""
    return float(np.max(np.abs(p / p.sum() - q / q.sum()))) if len(p) else 0.0


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two histograms over the same bins."""
    a, b = p / p.sum(), q / q.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return max(0.0, (kl(a) + kl(b)) / 2)


def _histograms(train: np.ndarray, served: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of both samples over shared bins: one per value when few, else between quantiles."""
    pooled = np.concatenate([train, served])
    distinct = np.unique(pooled)
    side: Literal["left", "right"]
    if len(distinct) <= EXACT_BINS:
        edges, side = distinct[1:], "left"  # bin k holds distinct[k]
    else:
        inner = np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1]
        edges, side = np.unique(np.quantile(pooled, inner)), "right"
    size = len(edges) + 1
    return (
        np.bincount(np.searchsorted(edges, train, side=side), minlength=size).astype(np.float64),
        np.bincount(np.searchsorted(edges, served, side=side), minlength=size).astype(np.float64),
    )


def _training_features(ingest_dir: Path, seq_len: int) -> tuple[dict[str, np.ndarray], int]:
    """Each compared feature over the training examples, as the model read it: the last `seq_len`
    behaviors before each example. Categorical features come as counts per id, numeric ones as
    one value per example (the age only where there is a history). Also the number of examples.
    """
    examples = pq.read_table(Path(ingest_dir) / "examples", columns=["user", "ts", "hist_end", "split"])
    examples = examples.filter(pc.equal(examples.column("split"), "train"))
    behaviors = pq.read_table(Path(ingest_dir) / "behaviors", columns=["user", *CATEGORICAL.values(), "ts"])
    lists = {name: behaviors.column(name).combine_chunks() for name in (*CATEGORICAL.values(), "ts")}
    offsets = lists["ts"].offsets.to_numpy() - lists["ts"].offsets[0].as_py()
    flat = {name: pc.list_flatten(col).to_numpy() for name, col in lists.items()}
    users = behaviors.column("user").to_numpy()
    user, hist_end = examples.column("user").to_numpy(), examples.column("hist_end").to_numpy()
    row_of = np.full(int(max(users.max(initial=0), user.max(initial=0))) + 1, -1, np.int64)
    row_of[users] = np.arange(len(users))
    # Row -1 (a user without behaviors) lands on the last entries: no behaviors, past the end.
    row = row_of[user]
    n_behaviors = np.append(np.diff(offsets), 0)[row]
    # A history longer than the user's behaviors is the validate step's finding; here it is cut.
    end = np.minimum(hist_end, n_behaviors)
    length = np.minimum(end, seq_len)
    end_at = offsets[row] + end
    start_at = end_at - length
    # How many training examples read each behavior: +1 where a window starts, -1 past its end.
    n_flat = len(flat["ts"])
    reads = np.cumsum(
        np.bincount(start_at, minlength=n_flat + 1) - np.bincount(end_at, minlength=n_flat + 1)
    )[:n_flat]
    features: dict[str, np.ndarray] = {
        name: np.bincount(flat[column], weights=reads) if n_flat else np.zeros(0)
        for name, column in CATEGORICAL.items()
    }
    last = np.flatnonzero(length > 0)
    features["history_length"] = length.astype(np.float64)
    ts = examples.column("ts").to_numpy()
    features["last_behavior_age_hours"] = (ts[last] - flat["ts"][end_at[last] - 1]) / HOUR_MS
    return features, examples.num_rows


def _served_features(requests: list[dict[str, Any]], sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """The same features over the logged requests (counts per id sized like the training ones)."""
    sequences = [r["features"] for r in requests]
    features: dict[str, np.ndarray] = {}
    for name in CATEGORICAL:
        values = np.concatenate(
            [np.asarray(s.get(name, []), np.int64) for s in sequences] or [np.zeros(0, np.int64)]
        )
        values = values[values >= 0]
        size = max(sizes.get(name, 0), int(values.max(initial=-1)) + 1)
        features[name] = np.bincount(values, minlength=size).astype(np.float64)
    lengths = np.array([len(s.get("seq_item", [])) for s in sequences], np.float64)
    features["history_length"] = lengths
    features["last_behavior_age_hours"] = np.array(
        [(r["ts"] - r["features"]["seq_ts"][-1]) / HOUR_MS for r in requests if r["features"].get("seq_ts")],
        np.float64,
    )
    return features


def distribution_skew(
    requests: list[dict[str, Any]], ingest_dir: Path, cfg: ValidateConfig
) -> tuple[dict[str, Any], list[Failure]]:
    """Distance per feature between the training examples of `ingest_dir` and the served requests.

    Judged only with at least `cfg.skew_min_requests` requests; fewer are reported as measured.
    """
    report: dict[str, Any] = {"requests": len(requests), "judged": len(requests) >= cfg.skew_min_requests}
    if not requests or not (Path(ingest_dir) / "examples").exists():
        # No requests, or an output without examples (a feature-store-only one): nothing to compare.
        report |= {"judged": False, "features": {}}
        return report, []
    # Requests of one model version share its seq_len; over several, the most common one is taken.
    lengths, counts = np.unique([int(r["seq_len"]) for r in requests], return_counts=True)
    seq_len = int(lengths[np.argmax(counts)])
    train, n_train = _training_features(ingest_dir, seq_len)
    served = _served_features(requests, {name: len(train[name]) for name in CATEGORICAL})
    report |= {"train_examples": n_train, "seq_len": seq_len, "features": {}}
    failures = []
    for name in (*CATEGORICAL, *NUMERIC):
        a, b = train[name], served[name]
        if name in CATEGORICAL:
            a = np.pad(a, (0, max(0, len(b) - len(a))))
            b = np.pad(b, (0, max(0, len(a) - len(b))))
            measure, check, bound = "L-infinity distance", "linf_distance", cfg.skew_max_linf
            distance = linf_distance(a, b) if a.sum() and b.sum() else None
        else:
            measure, check, bound = "Jensen-Shannon divergence", "js_divergence", cfg.skew_max_js
            distance = js_divergence(*_histograms(a, b)) if len(a) and len(b) else None
        report["features"][name] = {
            "measure": measure,
            "distance": None if distance is None else round(distance, 6),
            "threshold": bound,
            "training": float(a.sum()) if name in CATEGORICAL else len(a),
            "served": float(b.sum()) if name in CATEGORICAL else len(b),
        }
        if report["judged"] and distance is not None and distance > bound:
            failures.append(Failure("skew", check, name, round(distance, 4), {"max_value": bound}))
    return report, failures
