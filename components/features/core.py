"""The features step: build Feast feature tables from ingest outputs, apply the repo, fill the online store."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
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
from feature_repo.bulk import open_bulk
from feature_repo.push import ms_to_datetime
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
# Views whose rows belong to a user's activity: an idle user's rows leave them (profiles stay).
EVICTABLE_VIEWS = frozenset({USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR})
_SNAPSHOT_PASS_ROWS = 2_000_000  # rows of a snapshot table read at once (~50 bytes each)
_ROW = "__seqrank_row"  # example position, carried through Feast joins that reorder and drop rows
# Materialization windows are [start, end); end one tick past the newest row so it is inside.
_ONE_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Called after every chunk with the stage ("table <view>" or "online <view>") and the rows it held.
ChunkHook = Callable[[str, int], None]


# Called with a view and each batch of its table as it is built (the online sync of the sequences).
TableHook = Callable[[str, pa.RecordBatch], None]


def build_tables(
    ingest_dir: Path,
    data_dir: Path,
    cfg: FeatureConfig,
    on_chunk: ChunkHook | None = None,
    on_table: TableHook | None = None,
) -> dict[str, int]:
    """Write one Parquet table per feature view into `data_dir` (all or nothing); return row counts.

    Input is read `cfg.materialize_chunk_users` rows at a time, once per ingest output (both
    sequence views come from one read of behaviors/), and every chunk's output is written before
    the next is read; `on_table(view, batch)` sees each output batch. A view whose optional source
    (item_stats/) the ingest output lacks gets an empty table, so the repo and its services stay the
    same and reads of it return nothing.
    """
    ingest_dir = Path(ingest_dir)
    transforms = {
        USER_BEHAVIOR: lambda b: tables.user_behavior(b, cfg.max_sequence_length),
        USER_CATEGORY_BEHAVIOR: lambda b: tables.user_category_behavior(b, cfg.category_k),
        ITEM_PROFILE: tables.item_profile,
        USER_PROFILE: tables.user_profile,
        ITEM_STATS_VIEW: tables.item_stats,
    }
    by_source: dict[str, list[str]] = {}
    for view in VIEWS:
        by_source.setdefault(tables.SOURCES[view][0], []).append(view)
    rows: dict[str, int] = dict.fromkeys(VIEWS, 0)
    with atomic_dir(data_dir) as tmp, contextlib.ExitStack() as files:
        for source, views in by_source.items():
            schema = tables.SOURCES[views[0]][1]
            # Streamed batch by batch, so memory holds one chunk of users however large the input.
            writers = {
                view: files.enter_context(_table_writer(table_path(tmp, view), view)) for view in views
            }
            if source in tables.OPTIONAL_SOURCE_DIRS and not (ingest_dir / source).exists():
                log.warning("%s: no %s/ in %s; the views stay empty", views, source, ingest_dir)
                continue
            reads = [tables.READS.get(view) for view in views]
            columns = None if None in reads else tuple({c for r in reads if r for c in r})
            for batch in tables.scan(ingest_dir / source, schema, cfg.materialize_chunk_users, columns):
                for view in views:
                    out = transforms[view](batch)
                    writers[view].write_batch(out)
                    rows[view] += out.num_rows
                    if on_table is not None:
                        on_table(view, out)
                    if on_chunk is not None:
                        on_chunk(f"table {view}", out.num_rows)
    return rows


def _table_writer(path: Path, view: str) -> pq.ParquetWriter:
    schema = TABLE_SCHEMAS[view]
    # Dictionary encoding of sequence values (timestamps are nearly all distinct) cost a third of
    # the table write and saved little after compression; scalars keep it. Snappy on the sequence
    # columns was over half of what remained (0.27 vs 0.12 s per 2,000 users of 1,000 behaviors)
    # for half their size, so they are stored uncompressed: ~2x the disk of the two sequence
    # tables, which nothing reads back in a run (their rows go online from memory).
    scalars = [f.name for f in schema if not pa.types.is_list(f.type)]
    compression = {f.name: "snappy" if f.name in scalars else "none" for f in schema}
    return pq.ParquetWriter(path, schema, use_dictionary=scalars, compression=compression)


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


def _newest_behavior(ingest_dir: Path, chunk_rows: int) -> int | None:
    """The newest behavior time (epoch ms) in the ingest output's behaviors/, None when it has none."""
    newest: int | None = None
    for file in tables.parquet_files(Path(ingest_dir) / "behaviors"):
        for batch in tables.iter_batches(file, chunk_rows, columns=["ts"]):
            top = pc.max(batch.column("ts").flatten()).as_py()
            if top is not None:
                newest = top if newest is None else max(newest, top)
    return newest


def _idle_rows(view: str, batch: pa.RecordBatch, cutoff: datetime) -> np.ndarray:
    """(R,) mask of the rows of a sequence-view batch whose user's last behavior is before `cutoff`.

    A user's last behavior is the newest stamp over their rows: their one user_behavior row, or
    their (user, category) rows, which together hold all of the user's latest behaviors.
    """
    stamps = batch.column(TIMESTAMP_FIELD)
    if view == USER_BEHAVIOR:
        return pc.less(stamps, pa.scalar(cutoff, type=stamps.type)).to_numpy(zero_copy_only=False)
    users = batch.column("user").to_numpy()  # rows ordered by user (tables.user_category_behavior)
    first = np.flatnonzero(np.concatenate(([True], users[1:] != users[:-1])))
    last = np.maximum.reduceat(stamps.cast(pa.int64()).to_numpy(), first)  # (users,) in µs
    cutoff_us = (cutoff - _EPOCH) // timedelta(microseconds=1)
    return np.repeat(last < cutoff_us, np.diff(np.append(first, len(users))))


class _Window:
    """The event-time range of the batches a view's online sync saw."""

    def __init__(self) -> None:
        self.range: tuple[datetime, datetime] | None = None

    def see(self, batch: pa.RecordBatch) -> None:
        lo, hi = (v.as_py() for v in pc.min_max(batch.column(TIMESTAMP_FIELD)).values())
        if lo is not None:
            self.range = (lo, hi) if self.range is None else (min(lo, self.range[0]), max(hi, self.range[1]))


def run(
    ingest_dir: Path,
    feast_dir: Path,
    cfg: FeatureConfig,
    on_chunk: ChunkHook | None = None,
    store_cfg: FeastStoreConfig | None = None,
) -> dict[str, Any]:
    """Apply the Feast repo, build feature tables into `feast_dir/data/`, and sync the online store.

    Everything streams: ingest outputs are read in record batches of at most
    `cfg.materialize_chunk_users` rows, each batch's sequence rows go to their table and straight
    to the online store (at most ~16 MiB per write), and are dropped before the next batch is read,
    so memory stays flat however many users there are. Profiles and item statistics are synced
    from their tables after. `on_chunk(stage, rows)` is called after every batch.

    The online store is synced, not refilled: where it holds rows already (any store a run wrote
    before, a staged copy of a live one included), only rows whose content changed are written and
    rows the tables no longer have are deleted, so it ends equal to a full rebuild. Users idle longer
    than `cfg.idle_ttl_days` before the newest behavior are left out of (evicted from) the sequence
    views. The feature tables are replaced all or nothing; a run that fails midway leaves online
    rows each whole and recorded, which the next run brings up to date.

    Returns a summary: users with a sequence, rows per feature table, per view what the sync wrote,
    kept and deleted, users written, idle and evicted, and seconds per stage and per view.
    """
    from feast import FeatureStore

    started = time.perf_counter()
    feast_dir = Path(feast_dir).resolve()
    data_dir = feast_dir / DATA_DIR
    store_cfg = store_cfg or FeastStoreConfig()
    write_store_config(feast_dir, cfg.project, store_cfg)
    if store_cfg.online_store == "sqlite":
        online.create_sqlite(feast_dir / ONLINE_DB_FILE)
    store = FeatureStore(repo_path=str(feast_dir))
    # Applied before the tables exist: sources only name their files, which the build below writes.
    store.apply(definitions(data_dir, cfg))
    applied = time.perf_counter()

    cutoff: datetime | None = None
    newest = _newest_behavior(Path(ingest_dir), cfg.materialize_chunk_users) if cfg.idle_ttl_days else None
    if newest is not None:
        cutoff = ms_to_datetime(newest) - timedelta(days=cfg.idle_ttl_days)
    bulk = open_bulk(store)
    bulk.begin_run()
    writer = online.Writer(bulk)
    try:
        syncs = {view: online.Sync(bulk, view, bulk.held_count(view) > 0, writer) for view in VIEWS}
        windows = {view: _Window() for view in VIEWS}
        seconds: dict[str, float] = dict.fromkeys(VIEWS, 0.0)

        def sequence_rows(view: str, batch: pa.RecordBatch) -> None:
            if view not in EVICTABLE_VIEWS:
                return
            view_started = time.perf_counter()
            drop = None if cutoff is None else _idle_rows(view, batch, cutoff)
            windows[view].see(batch)
            for start, part in online.slices(batch):
                syncs[view].add(part, None if drop is None else drop[start : start + part.num_rows])
                if on_chunk is not None:
                    on_chunk(f"online {view}", part.num_rows)
            seconds[view] += time.perf_counter() - view_started

        rows = build_tables(Path(ingest_dir), data_dir, cfg, on_chunk, on_table=sequence_rows)
        built = time.perf_counter()
        sequence_s = sum(seconds[view] for view in EVICTABLE_VIEWS)

        synced: dict[str, dict[str, int]] = {}
        for view in VIEWS:
            view_started = time.perf_counter()
            if view not in EVICTABLE_VIEWS:
                _sync_table(
                    syncs[view],
                    table_path(data_dir, view),
                    cfg.materialize_chunk_users,
                    windows[view],
                    on_chunk,
                )
            synced[view] = syncs[view].finish().summary()
            seconds[view] = round(seconds[view] + time.perf_counter() - view_started, 3)
            log.info("online %s: %s in %.1f s", view, synced[view], seconds[view])
        writer.wait()
        writer.close()
        bulk.flush()
    except BaseException:
        # A bulk load is one transaction: roll it back now, so the store's file is free for the
        # next run (which loads the table again from empty) instead of locked by this connection.
        writer.close()
        bulk.abort()
        raise
    for view in VIEWS:
        window = windows[view].range
        if window is not None:
            # Recorded like a materialize() run, once the rows are committed, so `feast
            # feature-views list` and incremental materialization know what the store holds.
            fv = store.get_feature_view(view)
            store.registry.apply_materialization(fv, store.project, window[0], window[1] + _ONE_MS)
    done = time.perf_counter()

    summary = {
        "users": rows[USER_BEHAVIOR],
        "rows": rows,
        "feast_dir": str(feast_dir),
        "project": cfg.project,
        "online_store": store_cfg.online_store,
        "online": synced,
        "written_users": synced[USER_BEHAVIOR]["written"],
        "idle_users": synced[USER_BEHAVIOR]["dropped"],
        "evicted_users": synced[USER_BEHAVIOR]["evicted"],
        "idle_cutoff": None if cutoff is None else cutoff.isoformat(),
        "seconds": {
            "apply": round(applied - started, 3),
            # Sequence rows go online as their tables are built: that time counts as materialize.
            "tables": round(built - applied - sequence_s, 3),
            "materialize": round(sum(seconds.values()), 3),
            "total": round(done - started, 3),
        },
        "online_seconds": seconds,
    }
    log.info(
        "features: %d users with sequences, %d written online, %d evicted, %.1f s",
        summary["users"],
        summary["written_users"],
        summary["evicted_users"],
        done - started,
    )
    return summary


def _sync_table(
    syncer: online.Sync, path: Path, chunk_rows: int, window: _Window, on_chunk: ChunkHook | None
) -> None:
    """Feed table `path` to `syncer` in bounded record batches (snapshot views: newest per entity)."""
    view = syncer.view
    if view in SNAPSHOT_VIEWS:
        batches = online.bounded(_latest_per_entity(path, SNAPSHOT_VIEWS[view], chunk_rows))
    else:
        batches = online.read_bounded(path, chunk_rows)
    for batch in batches:
        window.see(batch)
        syncer.add(batch)
        if on_chunk is not None:
            on_chunk(f"online {view}", batch.num_rows)


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
