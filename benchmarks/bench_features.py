"""Benchmark: online fetch of one user's 1,000-event sequence plus 20 category sub-sequences (p99 ≤ 2 ms).

Builds a synthetic ingest output, runs the features step on it (reporting materialization time),
then times, on a warm store, one lookup = `OnlineFeatures.user_sequence` (the long sequence) plus
`OnlineFeatures.category_sequences` for 20 categories (the SIM hard-search index). Feast's generic
`get_online_features` for the sequence alone runs beside it as the peer. Prints one JSON object.

    seqrank bench features --history 1000 --categories 20 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seqrank.config import FeastStoreConfig, FeatureConfig
from seqrank.schema import BEHAVIORS, ITEM_STATS, ITEMS, USERS, VOCAB

BUDGET_P99_MS = 2.0
START_MS = 1_767_225_600_000  # 2026-01-01
DAY_MS = 86_400_000
SPAN_DAYS = 30

log = logging.getLogger(__name__)


def _behaviors(
    rng: np.random.Generator, first_user: int, users: int, events: int, item_category: np.ndarray
) -> pa.Table:
    # Built as flat arrays + offsets: Python lists of a few million ints would dominate the setup.
    items = len(item_category) - 1
    offsets = pa.array(np.arange(users + 1, dtype=np.int32) * events)
    flat_items = rng.integers(1, items + 1, size=users * events)
    flat_ts = np.sort(
        rng.integers(START_MS, START_MS + SPAN_DAYS * DAY_MS, size=(users, events)), axis=1
    ).ravel()
    return pa.table(
        [
            pa.array(np.arange(first_user, first_user + users), type=pa.int64()),
            pa.ListArray.from_arrays(offsets, pa.array(flat_items)),
            pa.ListArray.from_arrays(offsets, pa.array(item_category[flat_items])),
            pa.ListArray.from_arrays(offsets, pa.array(flat_ts)),
            pa.ListArray.from_arrays(offsets, pa.array(np.ones(users * events, dtype=np.int8))),
            pa.ListArray.from_arrays(offsets, pa.array(np.zeros(users * events, dtype=np.int32))),
        ],
        schema=BEHAVIORS,
    )


def make_ingest(
    root: Path,
    users: int,
    items: int,
    categories: int,
    events: int,
    seed: int = 0,
    chunk_users: int = 5_000,
) -> Path:
    """A synthetic ingest output whose every user has `events` behaviors (DESIGN §3 layout).

    behaviors/ is written `chunk_users` users per file, so building millions of events keeps
    memory at one chunk; item_stats/ holds one snapshot per item and day.
    """
    rng = np.random.default_rng(seed)
    item_category = np.concatenate([[0], rng.integers(1, categories + 1, size=items)])
    for name in ("behaviors", "items", "users", "vocab", "item_stats"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for part, first in enumerate(range(1, users + 1, chunk_users)):
        n = min(chunk_users, users + 1 - first)
        table = _behaviors(rng, first, n, events, item_category)
        pq.write_table(table, root / "behaviors" / f"part-{part:05d}.parquet")
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
    impressions = rng.integers(0, 100, size=(items, SPAN_DAYS))
    clicks = rng.binomial(impressions, 0.05)
    stats = pa.table(
        {
            "item": np.repeat(np.arange(1, items + 1), SPAN_DAYS),
            "ts": np.tile(START_MS + (np.arange(SPAN_DAYS) + 1) * DAY_MS - 1, items),
            "impressions_1d": impressions.ravel(),
            "clicks_1d": clicks.ravel(),
            "impressions_total": np.cumsum(impressions, axis=1).ravel(),
            "clicks_total": np.cumsum(clicks, axis=1).ravel(),
        },
        schema=ITEM_STATS,
    )
    pq.write_table(stats, root / "item_stats" / "part-00000.parquet")
    user_table = pa.table(
        {
            "user": np.arange(1, users + 1),
            "age_bucket": np.ones(users, dtype=np.int32),
            "gender": pa.array(["f"] * users),
        },
        schema=USERS,
    )
    pq.write_table(user_table, root / "users" / "part-00000.parquet")
    for entity, n in {"user": users, "item": items, "category": categories, "brand": 49}.items():
        vocab = pa.table({"raw": [f"{entity[0]}{i}" for i in range(1, n + 1)], "index": np.arange(1, n + 1)})
        pq.write_table(vocab.cast(VOCAB), root / "vocab" / f"{entity}.parquet")
    return root


@contextlib.contextmanager
def redis_server(workdir: Path, timeout_s: float = 10.0) -> Iterator[str]:
    """A `redis-server` on a free loopback port without persistence; yields its host:port."""
    import redis

    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install -y redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    server = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=timeout_s)


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
    }


def benchmark_features(
    history: int = 1_000,
    categories: int = 20,
    users: int = 2_000,
    reads: int = 3_000,
    category_k: int = 200,
    store: str = "sqlite",
) -> dict[str, Any]:
    """Time one lookup = a user's `history`-event sequence + `categories` category sub-sequences.

    The data set has exactly `categories` categories, so every looked-up (user, category) row
    exists and holds about history / categories behaviors (up to `category_k`): the read costs what
    a SIM request over a user's whole category spread costs.
    """
    from components import features
    from serving.features import OnlineFeatures

    cfg = FeatureConfig(max_sequence_length=history, category_k=category_k)
    with tempfile.TemporaryDirectory(prefix="seqrank-bench-") as tmp, contextlib.ExitStack() as stack:
        store_cfg = FeastStoreConfig()
        if store == "redis":
            store_cfg = FeastStoreConfig(
                online_store="redis", redis_connection=stack.enter_context(redis_server(Path(tmp)))
            )
        ingest = make_ingest(Path(tmp) / "ingest", users, items=20_000, categories=categories, events=history)
        summary = features.run(ingest, Path(tmp) / "feast", cfg, store_cfg=store_cfg)
        online = OnlineFeatures(Path(tmp) / "feast")
        rng = np.random.default_rng(1)
        sample = rng.integers(1, users + 1, size=reads).tolist()
        wanted = list(range(1, categories + 1))
        for user in sample[:100]:  # warm caches, connection and registry
            assert len(online.user_sequence(user)["seq_item"]) == history
            assert len(online.category_sequences(user, wanted)) == categories
        lookup, sequence_only = [], []
        for user in sample:
            started = time.perf_counter()
            online.user_sequence(user)
            online.category_sequences(user, wanted)
            lookup.append(time.perf_counter() - started)
        for user in sample:
            started = time.perf_counter()
            online.user_sequence(user)
            sequence_only.append(time.perf_counter() - started)
        refs = [f"user_behavior:{name}" for name in ("seq_item", "seq_category", "seq_ts")]
        generic = []
        for user in sample[: max(reads // 3, 1)]:
            started = time.perf_counter()
            online.store.get_online_features(features=refs, entity_rows=[{"user": user}]).to_dict()
            generic.append(time.perf_counter() - started)
        values = sum(len(v["cat_seq_item"]) for v in online.category_sequences(sample[0], wanted).values())

    head = percentiles(lookup)
    return {
        **head,
        "budget_p99_ms": BUDGET_P99_MS,
        "store": store,
        "p99_over_budget": round(head["p99_ms"] / BUDGET_P99_MS, 3),
        "history": history,
        "categories": categories,
        "category_values_per_lookup": values,
        "sequence_only": percentiles(sequence_only),
        "feast_get_online_features_sequence_only": percentiles(generic),
        "reads": reads,
        "users": summary["users"],
        "materialize_s": summary["seconds"]["materialize"],
        "features_step_s": summary["seconds"]["total"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1_000, help="behaviors per user (all kept online)")
    parser.add_argument("--categories", type=int, default=20, help="category sub-sequences per lookup")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--reads", type=int, default=3_000)
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite", help="online store")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = benchmark_features(args.history, args.categories, args.users, args.reads, store=args.store)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
