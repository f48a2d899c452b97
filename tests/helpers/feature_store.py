"""A tiny ingest output (behaviors, items, users, vocab, item_stats) for the feature-store and
serving tests, and the feature config they share."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seqrank.config import FeastStoreConfig, FeatureConfig
from seqrank.schema import BEHAVIORS, ITEM_STATS, ITEMS, USERS, VOCAB, VOCAB_ENTITIES

N_USERS = 12
N_ITEMS = 60
N_CATEGORIES = 5
LONG_USER = 1  # has more behaviors than max_sequence_length
EMPTY_USER = 2  # a user row with no behaviors
CFG = FeatureConfig(project="seqrank_test", max_sequence_length=30, category_k=4, materialize_chunk_users=5)
DAY_MS = 86_400_000
STATS_T0 = 1_767_225_600_000  # 2026-01-01
STATS_DAYS = 4


def make_item_stats(root: Path, seed: int = 0) -> pa.Table:
    """item_stats/ as ingest will write it: per item and day the day's counts and running totals.

    Built here until ingest writes it; every item gets STATS_DAYS snapshots stamped at the last
    millisecond of their UTC day.
    """
    rng = np.random.default_rng(seed)
    impressions = rng.integers(0, 50, size=(N_ITEMS, STATS_DAYS))
    clicks = rng.binomial(impressions, 0.1)
    day_end = STATS_T0 + (np.arange(STATS_DAYS) + 1) * DAY_MS - 1
    table = pa.table(
        {
            "item": np.repeat(np.arange(1, N_ITEMS + 1), STATS_DAYS),
            "ts": np.tile(day_end, N_ITEMS),
            "impressions_1d": impressions.ravel(),
            "clicks_1d": clicks.ravel(),
            "impressions_total": np.cumsum(impressions, axis=1).ravel(),
            "clicks_total": np.cumsum(clicks, axis=1).ravel(),
        },
        schema=ITEM_STATS,
    )
    # Shuffled: snapshot order in the files says nothing about time, the online store must still
    # end up with each item's newest snapshot.
    table = table.take(rng.permutation(table.num_rows))
    (root / "item_stats").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / "item_stats" / "part-00000.parquet")
    return table


def make_ingest_dir(root: Path, seed: int = 0, item_stats: bool = True) -> Path:
    """A small ingest output (behaviors/, items/, users/, vocab/, item_stats/) in the DESIGN §3 layout."""
    rng = np.random.default_rng(seed)
    item_category = np.concatenate([[0], rng.integers(1, N_CATEGORIES + 1, size=N_ITEMS)])
    item_brand = np.concatenate([[0], rng.integers(1, 4, size=N_ITEMS)])
    rows: dict[str, list] = {name: [] for name in BEHAVIORS.names}
    for user in range(1, N_USERS + 1):
        n = {LONG_USER: 75, EMPTY_USER: 0}.get(user, int(rng.integers(1, 40)))
        items = rng.integers(1, N_ITEMS + 1, size=n)
        ts = np.sort(rng.integers(1_767_225_600_000, 1_769_904_000_000, size=n))
        rows["user"].append(user)
        rows["item"].append(items.tolist())
        rows["category"].append(item_category[items].tolist())
        rows["ts"].append(ts.tolist())
        rows["type"].append([1] * n)
        rows["session"].append([0] * n)
    for name in ("behaviors", "items", "users", "vocab"):
        (root / name).mkdir(parents=True, exist_ok=True)
    behaviors = pa.table(rows, schema=BEHAVIORS)
    # Two files, to exercise reading a multi-file step output in a stable order.
    pq.write_table(behaviors.slice(0, 7), root / "behaviors" / "part-00000.parquet")
    pq.write_table(behaviors.slice(7), root / "behaviors" / "part-00001.parquet")
    (root / "manifest.json").write_text("{}")
    items = pa.table(
        {
            "item": np.arange(1, N_ITEMS + 1),
            "category": item_category[1:],
            "brand": item_brand[1:],
            "price": rng.random(N_ITEMS) * 100,
        },
        schema=ITEMS,
    )
    pq.write_table(items, root / "items" / "part-00000.parquet")
    users = pa.table(
        {
            "user": np.arange(1, N_USERS + 1),
            "age_bucket": rng.integers(0, 6, size=N_USERS).astype(np.int32),
            "gender": ["f", "m", None] * (N_USERS // 3),
        },
        schema=USERS,
    )
    pq.write_table(users, root / "users" / "part-00000.parquet")
    sizes = {"user": N_USERS, "item": N_ITEMS, "category": N_CATEGORIES, "brand": 3}
    for entity in VOCAB_ENTITIES:
        n = sizes[entity]
        vocab = pa.table(
            {"raw": [f"{entity[0]}{i}" for i in range(1, n + 1)], "index": np.arange(1, n + 1)}, schema=VOCAB
        )
        pq.write_table(vocab, root / "vocab" / f"{entity}.parquet")
    if item_stats:
        make_item_stats(root, seed)
    return root


def expected_tail(ingest_dir: Path, user: int, n: int) -> dict[str, np.ndarray]:
    """The user's last `n` behaviors as the online store should serve them (seq_item, seq_category, seq_ts)."""
    behaviors = pq.read_table(ingest_dir / "behaviors").to_pylist()
    row = next(r for r in behaviors if r["user"] == user)
    return {
        f"seq_{k}": np.array(row[k][-n:] if n else [], dtype=np.int64) for k in ("item", "category", "ts")
    }


NEXT_DAY = 1_769_904_000_000 + DAY_MS  # after every generated behavior
GROWN = (3, 5, 9)  # users with new behaviors the next day
LATE = 7  # a user whose new behavior is late: older than their newest one
GONE = 11  # a user the next day's ingest no longer has


def next_day(ingest: Path, out: Path) -> Path:
    """`ingest` one day later (incremental materialization tests): new behaviors for GROWN, a late one for LATE, GONE dropped."""
    shutil.copytree(ingest, out)
    shutil.rmtree(out / "behaviors")
    (out / "behaviors").mkdir()
    rows = []
    for row in pq.read_table(ingest / "behaviors").to_pylist():
        if row["user"] == GONE:
            continue
        if row["user"] in GROWN:
            row = {
                k: [*v, v[-1] if k in ("category", "type", "session") else 0]
                for k, v in row.items()
                if k != "user"
            } | {"user": row["user"]}
            row["item"][-1] = 13
            row["ts"][-1] = NEXT_DAY
        if row["user"] == LATE:
            at = len(row["ts"]) // 2
            for k in ("item", "category", "ts", "type", "session"):
                row[k].insert(at, row[k][at])
            row["item"][at] = 14
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows, schema=BEHAVIORS), out / "behaviors" / "part-00000.parquet")
    return out


def online_rows(feast_dir: Path, view: str) -> list[tuple]:
    """Every (entity key, feature, serialized value, value text, event time) row of `view` in the
    SQLite online store of `feast_dir`, in key order."""
    with contextlib.closing(sqlite3.connect(feast_dir / "online.db")) as conn:
        return conn.execute(
            f'SELECT entity_key, feature_name, value, value_text, event_ts FROM "{CFG.project}_{view}" '
            "ORDER BY entity_key, feature_name"
        ).fetchall()


def feast_ingested_store(ingest: Path, feast_dir: Path, store_cfg: FeastStoreConfig | None = None) -> Path:
    """A Feast repo at `feast_dir` over `ingest`'s feature tables, its online store filled batch
    by batch through Feast's own `write_to_online_store` (DataFrame ingestion): the reference the
    features step's bulk writes are compared with."""
    from feast import FeatureStore

    from components import features
    from components.features import core, online
    from feature_repo import VIEWS, definitions, table_path, write_store_config

    features.build_tables(ingest, feast_dir / core.DATA_DIR, CFG)
    write_store_config(feast_dir, CFG.project, store_cfg)
    store = FeatureStore(repo_path=str(feast_dir))
    store.apply(definitions(feast_dir / core.DATA_DIR, CFG))
    for view in VIEWS:
        path = table_path(feast_dir / core.DATA_DIR, view)
        if view in core.SNAPSHOT_VIEWS:
            batches = core._latest_per_entity(path, core.SNAPSHOT_VIEWS[view], CFG.materialize_chunk_users)
        else:
            batches = online.read_bounded(path, CFG.materialize_chunk_users)
        for batch in batches:
            store.write_to_online_store(view, df=pa.Table.from_batches([batch]).to_pandas())
    return feast_dir
