"""tables.user_category_behavior: per (user, category) the latest k behaviors, against a plain loop."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest


def _behaviors(users: int, categories: int, events: int, seed: int) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, events + 1, size=users)
    total = int(lengths.sum())
    ts = np.concatenate([np.sort(rng.integers(0, 10**9, size=n)) for n in lengths]) if total else np.empty(0)
    offsets = pa.array(np.concatenate(([0], np.cumsum(lengths))), type=pa.int32())

    def column(values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, pa.array(values.astype(np.int64), type=pa.int64()))

    return pa.RecordBatch.from_pydict(
        {
            "user": pa.array(np.arange(1, users + 1), type=pa.int64()),
            "item": column(rng.integers(1, 10_000, size=total)),
            "category": column(rng.integers(1, categories + 1, size=total)),
            "ts": column(ts),
        }
    )


def _reference(batch: pa.RecordBatch, k: int) -> list[dict]:
    rows = []
    for record in batch.to_pylist():
        by_category: dict[int, list[tuple[int, int]]] = {}
        for item, category, ts in zip(record["item"], record["category"], record["ts"], strict=True):
            by_category.setdefault(category, []).append((item, ts))
        for category in sorted(by_category):
            kept = by_category[category][-k:]
            rows.append(
                {
                    "user": record["user"],
                    "category": category,
                    "item": [i for i, _ in kept],
                    "ts": [t for _, t in kept],
                    "last": by_category[category][-1][1],
                }
            )
    return rows


# 40 users x 30 categories fits the 16-bit radix sort; 3,000 x 30 does not (the int64 sort).
@pytest.mark.parametrize(("users", "categories"), [(40, 30), (3_000, 30)])
def test_latest_k_per_user_and_category_in_time_order(users, categories):
    from components.features import tables

    batch = _behaviors(users, categories, events=60, seed=users)
    out = tables.user_category_behavior(batch, k=3).to_pylist()
    expected = _reference(batch, k=3)
    assert [(r["user"], r["category"], r["cat_seq_item"], r["cat_seq_ts"]) for r in out] == [
        (r["user"], r["category"], r["item"], r["ts"]) for r in expected
    ]
    assert [r["event_timestamp"].timestamp() * 1000 for r in out] == pytest.approx(
        [r["last"] for r in expected]
    )
