"""The features step: build Feast feature tables from ingest outputs, apply the repo, fill the online store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.features import online, tables
from feature_repo import (
    ITEM_PROFILE,
    ITEM_STATS_VIEW,
    TABLE_SCHEMAS,
    TIMESTAMP_FIELD,
    USER_BEHAVIOR,
    USER_CATEGORY_BEHAVIOR,
    USER_PROFILE,
    VIEWS,
    Behavior,
    definitions,
    table_path,
    write_store_config,
)
from feature_repo.push import push_behaviors as push_online
from feature_repo.store_config import ONLINE_DB_FILE, STORE_YAML
from seqrank.config import FeastStoreConfig, FeatureConfig
from seqrank.storage import atomic_dir

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)

DATA_DIR = "data"  # feature tables under the Feast directory; the FileSources point here
# Features `historical_features` joins by default: everything but the sequences, which training
# takes from behaviors/ by hist_end (DESIGN §3) instead of a per-example copy.
HISTORICAL_FEATURES: tuple[str, ...] = tuple(
    f"{view}:{field.name}"
    for view in (USER_PROFILE, ITEM_PROFILE, ITEM_STATS_VIEW)
    for field in TABLE_SCHEMAS[view]
    if field.name not in {"user", "item", TIMESTAMP_FIELD}
)
# Views with many rows (snapshots) per entity -> their entity key; online holds the newest only.
SNAPSHOT_VIEWS = {ITEM_STATS_VIEW: "item"}
_SNAPSHOT_PASS_ROWS = 2_000_000  # rows of a snapshot table read at once (~50 bytes each)
_ROW = "__seqrank_row"  # example position, carried through Feast joins that reorder and drop rows
# Materialization windows are [start, end); end one tick past the newest row so it is inside.
_ONE_MS = timedelta(milliseconds=1)
# Called after every chunk with the stage ("table <view>" or "online <view>") and the rows it held.
ChunkHook = Callable[[str, int], None]


def build_tables(
    ingest_dir: Path, data_dir: Path, cfg: FeatureConfig, on_chunk: ChunkHook | None = None
) -> dict[str, int]:
    """Write one Parquet table per feature view into `data_dir` (all or nothing); return row counts.

    Input is read `cfg.materialize_chunk_users` rows at a time and every chunk's output is written
    before the next is read. A view whose optional source (item_stats/) the ingest output lacks
    gets an empty table, so the repo and its services stay the same and reads of it return nothing.
    """
    ingest_dir = Path(ingest_dir)
    transforms = {
        USER_BEHAVIOR: lambda b: tables.user_behavior(b, cfg.max_sequence_length),
        USER_CATEGORY_BEHAVIOR: lambda b: tables.user_category_behavior(b, cfg.category_k),
        ITEM_PROFILE: tables.item_profile,
        USER_PROFILE: tables.user_profile,
        ITEM_STATS_VIEW: tables.item_stats,
    }
    rows: dict[str, int] = {}
    with atomic_dir(data_dir) as tmp:
        for view in VIEWS:
            source, schema = tables.SOURCES[view]
            rows[view] = 0
            skip = view in tables.OPTIONAL_SOURCES and not (ingest_dir / source).exists()
            if skip:
                log.warning("%s: no %s/ in %s; the view stays empty", view, source, ingest_dir)
            # Streamed batch by batch, so memory holds one chunk of users however large the input.
            with pq.ParquetWriter(table_path(tmp, view), TABLE_SCHEMAS[view]) as writer:
                if skip:
                    continue
                for batch in tables.scan(ingest_dir / source, schema, cfg.materialize_chunk_users):
                    out = transforms[view](batch)
                    writer.write_batch(out)
                    rows[view] += out.num_rows
                    if on_chunk is not None:
                        on_chunk(f"table {view}", out.num_rows)
    return rows


def _latest_per_entity(path: Path, key: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """The newest row of every `key` in table `path` (what an online store must hold), in batches.

    Snapshot tables hold many rows per entity in no particular time order, so writing them as
    they come could leave an older snapshot online. The table is cut into ranges of `key` that
    each hold about _SNAPSHOT_PASS_ROWS rows, read with a filter, so memory stays at one range.
    """
    import pyarrow.dataset as ds

    total = pq.ParquetFile(path).metadata.num_rows
    if total == 0:
        return
    lows, highs = [], []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=[key]):
        low, high = (v.as_py() for v in pc.min_max(batch.column(key)).values())
        lows.append(low)
        highs.append(high)
    lo, hi = int(min(lows)), int(max(highs))
    passes = -(-total // _SNAPSHOT_PASS_ROWS)
    step = max(1, -(-(hi - lo + 1) // passes))
    dataset = ds.dataset(str(path), format="parquet")
    for start in range(lo, hi + 1, step):
        part = dataset.to_table(filter=(ds.field(key) >= start) & (ds.field(key) < start + step))
        if part.num_rows == 0:
            continue
        ordered = part.sort_by([(key, "ascending"), (TIMESTAMP_FIELD, "descending")])
        keys = ordered.column(key).to_numpy()
        first_of_key = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        yield from ordered.take(first_of_key).to_batches(max_chunksize=chunk_rows)


def _write_online(
    store: FeatureStore, view: str, path: Path, chunk_rows: int, on_chunk: ChunkHook | None = None
) -> tuple[datetime, datetime] | None:
    """Write table `path` to the online store through Feast, in bounded record batches.

    Returns the event-time range written (None for an empty table).
    """
    # Feast's materialize() loads its whole time window into memory; writing bounded record
    # batches through the provider's online write keeps memory at one batch for any table size.
    fv = store.get_feature_view(view)
    first: datetime | None = None
    last: datetime | None = None
    if view in SNAPSHOT_VIEWS:
        batches = online.bounded(_latest_per_entity(path, SNAPSHOT_VIEWS[view], chunk_rows))
    else:
        batches = online.read_bounded(path, chunk_rows)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        online.write(store, fv, batch)
        log.debug("%s: wrote %d rows online", view, batch.num_rows)
        if on_chunk is not None:
            on_chunk(f"online {view}", batch.num_rows)
        lo, hi = (v.as_py() for v in pc.min_max(batch.column(TIMESTAMP_FIELD)).values())
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
    return None if first is None or last is None else (first, last)


def run(
    ingest_dir: Path,
    feast_dir: Path,
    cfg: FeatureConfig,
    on_chunk: ChunkHook | None = None,
    store_cfg: FeastStoreConfig | None = None,
) -> dict[str, Any]:
    """Build feature tables into `feast_dir/data/`, apply the Feast repo, and fill the online store.

    Both passes stream: ingest outputs and feature tables are read in record batches of at most
    `cfg.materialize_chunk_users` rows (online writes also at most ~16 MiB), and each batch is
    written and dropped before the next is read, so memory stays flat however many users there are.
    `on_chunk(stage, rows)` is called after every batch (progress, or memory sampling in benchmarks).

    Returns a summary: users with a sequence, rows per feature table, seconds per stage and per
    view's online write.
    """
    from feast import FeatureStore

    started = time.perf_counter()
    feast_dir = Path(feast_dir).resolve()
    data_dir = feast_dir / DATA_DIR
    rows = build_tables(Path(ingest_dir), data_dir, cfg, on_chunk)
    built = time.perf_counter()

    store_cfg = store_cfg or FeastStoreConfig()
    write_store_config(feast_dir, cfg.project, store_cfg)
    store = FeatureStore(repo_path=str(feast_dir))
    objects = definitions(data_dir, cfg)
    store.apply(objects)
    if store_cfg.online_store == "sqlite":
        online.use_wal(feast_dir / ONLINE_DB_FILE)
    applied = time.perf_counter()

    online_seconds: dict[str, float] = {}
    for view in VIEWS:
        view_started = time.perf_counter()
        path = table_path(data_dir, view)
        window = _write_online(store, view, path, cfg.materialize_chunk_users, on_chunk)
        if window is not None:
            # Recorded like a materialize() run, so `feast feature-views list` and incremental
            # materialization know what the online store holds.
            fv = store.get_feature_view(view)
            store.registry.apply_materialization(fv, store.project, window[0], window[1] + _ONE_MS)
        online_seconds[view] = round(time.perf_counter() - view_started, 3)
        log.info("materialized %s: %d rows in %.1f s", view, rows[view], online_seconds[view])
    done = time.perf_counter()

    summary = {
        "users": rows[USER_BEHAVIOR],
        "rows": rows,
        "feast_dir": str(feast_dir),
        "project": cfg.project,
        "online_store": store_cfg.online_store,
        "seconds": {
            "tables": round(built - started, 3),
            "apply": round(applied - built, 3),
            "materialize": round(done - applied, 3),
            "total": round(done - started, 3),
        },
        "online_seconds": online_seconds,
    }
    log.info("features: %d users with sequences, %.1f s", summary["users"], done - started)
    return summary


def push_behaviors(feast_dir: Path, events: Iterable[Behavior | tuple[int, int, int, int]]) -> dict[str, int]:
    """Push new (user, item, category, ts) behaviors into the online store of `feast_dir`.

    Opens the store for this one call; a long-running service keeps its store warm and calls
    `feature_repo.push_behaviors` (or `serving.features.OnlineFeatures.push`) instead.
    """
    return push_online(_open(feast_dir), events)


def historical_features(
    feast_dir: Path, entity_df: pd.DataFrame, features: Sequence[str] = HISTORICAL_FEATURES
) -> pd.DataFrame:
    """Point-in-time profile and item-statistics features for training examples.

    Args:
        feast_dir: an applied seqrank Feast directory.
        entity_df: one row per example with columns `user`, `item` (dense indices) and
            `event_timestamp` (tz-aware, or naive UTC).
        features: `view:feature` references; default: user profile, item profile, item statistics.

    Returns:
        `entity_df`'s rows in their order (index reset) with one column per feature. Per view and
        entity Feast joins the newest row whose event timestamp is at or before the example's
        (equal counts as known); with no TTL there is no lower bound. An example with no such row
        gets nulls for that view's features (integer columns then turn float).
    """
    missing = {"user", "item", TIMESTAMP_FIELD} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df lacks columns {sorted(missing)}; needs user, item, {TIMESTAMP_FIELD}")
    store = _open(feast_dir)
    out = entity_df.reset_index(drop=True)
    keyed = out.assign(**{_ROW: np.arange(len(out))})
    by_view: dict[str, list[str]] = {}
    for ref in features:
        by_view.setdefault(ref.split(":", 1)[0], []).append(ref)
    columns = {}
    for refs in by_view.values():
        # One view per call: Feast's file offline store drops an example outright when its entity
        # has rows in a view but all of them are later than the example, so a joint call would
        # lose the profile features of every example older than its item's first statistics.
        got = store.get_historical_features(entity_df=keyed, features=refs).to_df().set_index(_ROW)
        for ref in refs:
            name = ref.split(":", 1)[1]
            columns[name] = got[name].reindex(keyed[_ROW]).to_numpy()
    return out.assign(**columns)


def _open(feast_dir: Path) -> FeatureStore:
    from feast import FeatureStore

    feast_dir = Path(feast_dir).resolve()
    if not (feast_dir / STORE_YAML).is_file():
        raise FileNotFoundError(f"no {STORE_YAML} in {feast_dir}: run `seqrank features materialize` first")
    return FeatureStore(repo_path=str(feast_dir))
