"""Sync feature-table record batches into a Feast online store: write changed rows, drop stale ones.

Rows are serialized straight from Arrow (feature_repo.encoding) and written in bulk in Feast's own
layout (feature_repo.bulk), so Feast's API and CLI read them. When the store already holds rows of
the view, only rows whose content differs are written (`Bulk.changed`), and held rows the input no
longer has (users gone, or idle past the TTL) are deleted: after a sync the view equals a full rebuild.

Notation: R rows in a batch.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.features import tables
from feature_repo.bulk import Bulk, Rows, first_load_marker, mark_first_load
from feature_repo.encoding import batch_rows, value_bytes

# Arrow bytes per online write call. Serialized values, keys and statement tuples of a write take
# a few times the Arrow size, so 16 MiB (~700 users of 1,000-event sequences) stays under ~100 MiB.
WRITE_BYTES = 16 * 2**20

log = logging.getLogger(__name__)


def to_values(column: pa.Array) -> list[Any]:
    """Feast `Value` protos, one per row, for an Arrow column of a feature table."""
    from feast.protos.feast.types.Value_pb2 import Value

    return [Value.FromString(b) for b in value_bytes(column)]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # A write allocates hundreds of thousands of short-lived, acyclic bytes and tuples; each
    # allocation burst triggers cyclic-GC passes over a heap that holds all of Feast and pandas,
    # up to 3x the write time of (user, category) rows when profiled. Reference counting frees them.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write(bulk: Bulk, view: str, batch: pa.RecordBatch) -> None:
    """Write one record batch of `view`'s table to the online store (upserts, last write wins)."""
    if batch.num_rows:
        with _gc_paused():
            bulk.write(view, batch_rows(view, batch))


@dataclass
class SyncCounts:
    """What a sync of one view did: rows written, rows already held as they are, rows deleted
    (of them `evicted`: rows the `drop` mask removed from the input), and input rows dropped."""

    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    evicted: int = 0
    dropped: int = 0
    seen: list[np.ndarray] = field(default_factory=list, repr=False)
    gone: list[np.ndarray] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, int]:
        return {
            "written": self.written,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "evicted": self.evicted,
            "dropped": self.dropped,
        }


def _hashes(keys: Iterable[bytes]) -> np.ndarray:
    # Keys seen in this run, as 64-bit hashes: 8 bytes per (user, category) row instead of a set of
    # ~100-byte bytes objects; hash() of bytes is stable within the process, collisions ~R²/2⁶⁴.
    return np.fromiter((hash(k) for k in keys), dtype=np.int64)


class Writer:
    """A store's bulk writes on a thread of their own, one at a time and at most one in flight.

    `write` waits for the previous write, then hands this one to the thread and returns, so the
    store's own work on one batch (SQLite steps its inserts with the GIL released; Redis waits
    on the network) runs while the caller reads, builds and encodes the next. Measured on the
    features step at 20,000 users × 1,000 events (SQLite): 17.0–17.5 s → 14.5–15.5 s, peak RSS
    942 → 946–964 MiB (one more batch of rows alive). A failed write raises from the next
    `write` or `wait`.
    """

    def __init__(self, bulk: Bulk) -> None:
        self.bulk = bulk
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqrank-online-write")
        self._pending: Future[None] | None = None

    def write(self, view: str, rows: Rows) -> None:
        self.wait()
        self._pending = self._pool.submit(self.bulk.write, view, rows)

    def end_load(self, view: str) -> None:
        """`bulk.end_load(view)` on the thread, after the write in flight."""
        self.wait()
        self._pending = self._pool.submit(self.bulk.end_load, view)

    def wait(self) -> None:
        """Until the write in flight, if any, is done; raises what it raised."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the write in flight (its error is not raised) and stop the thread."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):
                pending.result()
        self._pool.shutdown()


class Sync:
    """Brings `view` in the online store to exactly the rows given to `add`, once `finish` runs.

    With `incremental` (the store holds rows of the view) only rows whose content changed are
    written, and `finish` deletes held rows no batch had. Otherwise every row
    is written and nothing is read back (a new store). With a `writer`, rows are written through
    it (overlapped with the next batch's work), else directly.
    """

    def __init__(self, bulk: Bulk, view: str, incremental: bool, writer: Writer | None = None) -> None:
        self.bulk, self.view, self.incremental = bulk, view, incremental
        self.writer = writer
        self.counts = SyncCounts()

    def add(self, batch: pa.RecordBatch, drop: np.ndarray | None = None) -> None:
        """Sync one record batch of the view's table; rows where `drop` (R,) is set are left out
        (and deleted by `finish` when held: an idle user's rows)."""
        counts = self.counts
        if drop is not None and drop.any():
            counts.dropped += int(drop.sum())
            if self.incremental:
                counts.gone.append(_hashes(batch_rows(self.view, batch.filter(pa.array(drop))).keys))
            batch = batch.filter(pa.array(~drop))
        if batch.num_rows == 0:
            return
        with _gc_paused():
            rows = batch_rows(self.view, batch)
            if self.incremental:
                counts.seen.append(_hashes(rows.keys))
                if self.writer is not None:
                    self.writer.wait()  # reads see every earlier write
                changed = self.bulk.changed(self.view, rows)
                counts.unchanged += len(rows) - len(changed)
                rows = rows.take(changed) if len(changed) < len(rows) else rows
            if self.writer is not None:
                self.writer.write(self.view, rows)
            else:
                self.bulk.write(self.view, rows)
        counts.written += len(rows)

    def finish(self) -> SyncCounts:
        if self.writer is not None:
            self.writer.wait()
        if self.incremental:
            _sweep(self.bulk, self.view, self.counts)
        # The view is complete: what its bulk load deferred (an index over the whole table) is
        # built on the writer's thread while the caller goes on with the next view; `wait` (or
        # the next write) waits for it.
        if self.writer is not None:
            self.writer.end_load(self.view)
        else:
            self.bulk.end_load(self.view)
        return self.counts


def sync(
    bulk: Bulk,
    view: str,
    batches: Iterable[pa.RecordBatch],
    incremental: bool,
    on_batch: Callable[[int], None] | None = None,
) -> SyncCounts:
    """`Sync` of `view` over the record batches of its whole table; `on_batch(rows)` after each."""
    syncer = Sync(bulk, view, incremental)
    for batch in batches:
        syncer.add(batch)
        if on_batch is not None:
            on_batch(batch.num_rows)
    return syncer.finish()


def _sweep(bulk: Bulk, view: str, counts: SyncCounts) -> None:
    """Delete held rows of `view` the input did not have; those it dropped count as evicted."""
    seen = np.unique(np.concatenate(counts.seen)) if counts.seen else np.empty(0, np.int64)
    gone = np.unique(np.concatenate(counts.gone)) if counts.gone else np.empty(0, np.int64)
    for page in bulk.held_keys(view):
        hashes = _hashes(page)
        stale = ~_member(hashes, seen)
        if stale.any():
            bulk.delete(view, [k for k, s in zip(page, stale.tolist(), strict=True) if s])
            counts.deleted += int(stale.sum())
            counts.evicted += int((stale & _member(hashes, gone)).sum())


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.clip(np.searchsorted(sorted_set, values), 0, len(sorted_set) - 1)
    return sorted_set[at] == values


def slices(batch: pa.RecordBatch, max_bytes: int = WRITE_BYTES) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Zero-copy slices of `batch` of at most ~`max_bytes` Arrow bytes each, with their first row."""
    row_bytes = max(1, batch.nbytes // max(1, batch.num_rows))
    rows = max(1, max_bytes // row_bytes)
    for start in range(0, batch.num_rows, rows):
        yield start, batch.slice(start, rows)


def bounded(batches: Iterable[pa.RecordBatch], max_bytes: int = WRITE_BYTES) -> Iterator[pa.RecordBatch]:
    """`batches` cut into zero-copy slices of at most ~`max_bytes` Arrow bytes each."""
    for batch in batches:
        for _, part in slices(batch, max_bytes):
            yield part


def read_bounded(path: Any, max_rows: int, max_bytes: int = WRITE_BYTES) -> Iterator[pa.RecordBatch]:
    """Record batches of Parquet file `path`, each within `max_rows` rows and about `max_bytes` bytes.

    Read one row group at a time (`tables.iter_batches`), so memory holds one batch whatever the
    number of rows in the file; batches are sized from the table's Arrow bytes per row.
    """
    if pq.ParquetFile(path).metadata.num_rows == 0:
        return
    # Arrow bytes per row, from a small first read (Parquet's own sizes are encoded, often 4x less).
    sample = next(tables.iter_batches(path, 64))
    row_bytes = max(1, sample.nbytes // max(1, sample.num_rows))
    rows = int(np.clip(max_bytes // row_bytes, 1, max_rows))
    yield from bounded(tables.iter_batches(path, rows), max_bytes)


# Page size of a new SQLite online store. 1,000-event sequences serialize to 3-6 KB per value,
# which on 4 KiB pages spill into overflow chains; on 16 KiB pages they fit their leaf and bulk
# writes of (user, category) rows ran ~1.6x faster. Fixed when the file is created.
SQLITE_PAGE_BYTES = 16_384


def create_sqlite(db_path: Path) -> None:
    """Prepare the SQLite online store file at `db_path` before Feast opens it.

    A new file gets SQLITE_PAGE_BYTES pages and a first-load marker (feature_repo.bulk): the run
    fills it through a rollback journal in memory and turns on write-ahead logging at its end. A
    file left with its marker by a run that died is removed and started anew. Every other file
    journals with WAL (kept in the file).

    In a store in use, a rollback journal copies each existing page a write touches to the journal
    first; (user, category) keys land on random pages of a table that grows to GBs, so the write
    slowed with every chunk (0.19 -> 0.33 ms per row over 200k rows). WAL appends changed pages
    instead: 1.7x faster on the same rows, and readers no longer block on a writer. A first load
    writes new pages, which a rollback journal does not copy, and through the WAL they would be
    written twice (log, then checkpoint).
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    marker = first_load_marker(db_path)
    if marker.exists():
        log.warning("%s: a run died while filling this new store; starting it again", db_path)
        for leftover in (
            db_path,
            *(db_path.with_name(db_path.name + s) for s in ("-journal", "-wal", "-shm")),
        ):
            leftover.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
            conn.execute(f"PRAGMA page_size={SQLITE_PAGE_BYTES}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":  # (else set up as in use)
                mark_first_load(db_path)
            return
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise RuntimeError(f"{db_path}: SQLite refused WAL journaling (journal_mode={mode})")
