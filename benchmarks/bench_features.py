"""Benchmark: online fetch of one user's 1,000-event sequence from the Feast store (budget p99 ≤ 2 ms).

Builds a synthetic ingest output, runs the features step on it (reporting materialization time),
then times `OnlineFeatures.user_sequence` on a warm store, with Feast's generic
`get_online_features` beside it as the peer. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seqrank.config import FeatureConfig
from seqrank.schema import BEHAVIORS, ITEMS, USERS, VOCAB

BUDGET_P99_MS = 2.0
START_MS = 1_767_225_600_000  # 2026-01-01


def make_ingest(root: Path, users: int, items: int, categories: int, events: int, seed: int = 0) -> Path:
    """A synthetic ingest output whose every user has `events` behaviors (DESIGN §3 layout)."""
    rng = np.random.default_rng(seed)
    item_category = np.concatenate([[0], rng.integers(1, categories + 1, size=items)])
    for name in ("behaviors", "items", "users", "vocab"):
        (root / name).mkdir(parents=True, exist_ok=True)
    # Built as flat arrays + offsets: Python lists of a few million ints would dominate the setup.
    offsets = pa.array(np.arange(users + 1, dtype=np.int32) * events)
    flat_items = rng.integers(1, items + 1, size=users * events)
    flat_ts = np.sort(
        rng.integers(START_MS, START_MS + 30 * 86_400_000, size=(users, events)), axis=1
    ).ravel()
    behaviors = pa.table(
        [
            pa.array(np.arange(1, users + 1), type=pa.int64()),
            pa.ListArray.from_arrays(offsets, pa.array(flat_items)),
            pa.ListArray.from_arrays(offsets, pa.array(item_category[flat_items])),
            pa.ListArray.from_arrays(offsets, pa.array(flat_ts)),
            pa.ListArray.from_arrays(offsets, pa.array(np.ones(users * events, dtype=np.int8))),
            pa.ListArray.from_arrays(offsets, pa.array(np.zeros(users * events, dtype=np.int32))),
        ],
        schema=BEHAVIORS,
    )
    pq.write_table(behaviors, root / "behaviors" / "part-00000.parquet")
    item_table = pa.table(
        {
            "item": np.arange(1, items + 1),
            "category": item_category[1:],
            "brand": rng.integers(1, 50, size=items),
            "price": rng.random(items) * 100,
        },
        schema=ITEMS,
    )
    pq.write_table(item_table, root / "items" / "part-00000.parquet")
    user_table = pa.table(
        {
            "user": np.arange(1, users + 1),
            "age_bucket": np.ones(users, dtype=np.int32),
            "gender": ["f"] * users,
        },
        schema=USERS,
    )
    pq.write_table(user_table, root / "users" / "part-00000.parquet")
    for entity, n in {"user": users, "item": items, "category": categories, "brand": 49}.items():
        vocab = pa.table({"raw": [f"{entity[0]}{i}" for i in range(1, n + 1)], "index": np.arange(1, n + 1)})
        pq.write_table(vocab.cast(VOCAB), root / "vocab" / f"{entity}.parquet")
    return root


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=3_000)
    parser.add_argument("--events", type=int, default=1_000, help="behaviors per user (all kept online)")
    parser.add_argument("--reads", type=int, default=3_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from components import features
    from serving.features import OnlineFeatures

    cfg = FeatureConfig(max_sequence_length=args.events)
    with tempfile.TemporaryDirectory(prefix="seqrank-bench-") as tmp:
        ingest = make_ingest(
            Path(tmp) / "ingest", args.users, items=20_000, categories=100, events=args.events
        )
        summary = features.run(ingest, Path(tmp) / "feast", cfg)
        online = OnlineFeatures(Path(tmp) / "feast")
        rng = np.random.default_rng(1)
        users = rng.integers(1, args.users + 1, size=args.reads).tolist()
        for user in users[:100]:  # warm caches, connection and registry
            assert len(online.user_sequence(user)["seq_item"]) == args.events
        fast = []
        for user in users:
            started = time.perf_counter()
            online.user_sequence(user)
            fast.append(time.perf_counter() - started)
        refs = [f"user_behavior:{name}" for name in ("seq_item", "seq_category", "seq_ts")]
        generic = []
        for user in users[: args.reads // 3]:
            started = time.perf_counter()
            online.store.get_online_features(features=refs, entity_rows=[{"user": user}]).to_dict()
            generic.append(time.perf_counter() - started)

    result = {
        **percentiles(fast),
        "budget_p99_ms": BUDGET_P99_MS,
        "p99_over_budget": round(percentiles(fast)["p99_ms"] / BUDGET_P99_MS, 3),
        "sequence_length": args.events,
        "feast_get_online_features": percentiles(generic),
        "materialize_s": summary["seconds"]["materialize"],
        "features_step_s": summary["seconds"]["total"],
        "users": summary["users"],
        "rows": summary["rows"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
