"""Write feature-table record batches into a Feast online store through the provider's own write path.

Feast's `write_to_online_store` goes DataFrame -> Arrow -> one Python object per array element ->
a type check per element -> protobuf. For 1,000-event sequences that conversion is ~80% of a
write. Here each column is turned into `Value` protos straight from its Arrow buffers (list
columns through a vectorized varint encoding), then handed to the provider's `online_write_batch`,
the same call Feast's ingestion and `materialize()` end in, so keys, encoding and store are Feast's.

Notation: R rows in a batch, N values of a list column over all rows.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.features import tables
from feature_repo import TIMESTAMP_FIELD

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

# Arrow bytes per online write call. Python objects and protobufs of a write take ~5x the Arrow
# size, so 16 MiB (~700 users of 1,000-event sequences) keeps one write under ~100 MiB.
WRITE_BYTES = 16 * 2**20

# What a provider's online_write_batch takes per row: key, features, event time, created time.
OnlineRow: TypeAlias = "tuple[EntityKey, dict[str, Value], datetime, datetime | None]"


def _scalar(field: str) -> Callable[[pa.Array], list[Any]]:
    def convert(column: pa.Array) -> list[Any]:
        from feast.protos.feast.types.Value_pb2 import Value

        # A null becomes an empty Value, as Feast's own conversion writes it (reads give None).
        return [Value() if v is None else Value(**{field: v}) for v in column.to_pylist()]

    return convert


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative Python int (a length prefix)."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def varints(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Protobuf varint encoding of N int64 `values`, vectorized: the bytes and (N + 1,) byte offsets.

    A negative value is encoded as its two's-complement uint64, in 10 bytes, as protobuf does.
    """
    v = values.astype(np.int64).view(np.uint64)  # (N,)
    top = int(v.max()) if len(v) else 0
    width = 1  # bytes of the largest value
    while width < 10 and top >= 1 << (7 * width):
        width += 1
    sizes = np.ones(len(v), dtype=np.int64)  # bytes per value: 1 + 7-bit groups above the first
    for k in range(1, width):
        sizes += v >= np.uint64(1 << (7 * k))
    offsets = np.zeros(len(v) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    starts = offsets[:-1]
    smallest = int(sizes.min()) if len(v) else 0
    out = np.empty(int(offsets[-1]), dtype=np.uint8)
    for k in range(width):
        # Byte k of every value that has one; the high bit says more bytes follow.
        if k < smallest:  # every value has byte k: no subsetting
            group = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
            out[starts + k] = group | ((sizes > k + 1).astype(np.uint8) << 7)
        else:
            has = np.flatnonzero(sizes > k)
            group = ((v[has] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
            out[starts[has] + k] = group | ((sizes[has] > k + 1).astype(np.uint8) << 7)
    return out.tobytes(), offsets


# Wire tags: Value.int64_list_val is field 14 and Int64List.val field 1, both length-delimited.
_INT64_LIST_VAL_TAG = bytes([14 << 3 | 2])
_VAL_TAG = bytes([1 << 3 | 2])


def _int64_lists(column: pa.Array) -> list[Any]:
    """One `Value(int64_list_val=...)` per row of a list<int64> column of R rows (N values).

    Building `Int64List(val=[...])` from Python ints costs ~150 ns per element (most of a write
    of 1,000-event sequences); instead every row's packed field is encoded at once with numpy and
    each `Value` parsed from its bytes, which protobuf's C parser does at memory speed.
    """
    from feast.protos.feast.types.Value_pb2 import Value

    offsets = column.offsets.to_numpy()  # (R + 1,), may start above 0 in a sliced batch
    values = column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]  # (N,)
    packed, byte_offsets = varints(values)
    bounds = byte_offsets[offsets - offsets[0]].tolist()  # (R + 1,) byte range of every row
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    out = []
    for i in range(len(column)):
        if not valid[i]:
            out.append(Value())  # a null row, as Feast writes it
            continue
        body = packed[bounds[i] : bounds[i + 1]]
        inner = _VAL_TAG + _varint(len(body)) + body if body else b""  # an empty list has no field
        out.append(Value.FromString(_INT64_LIST_VAL_TAG + _varint(len(inner)) + inner))
    return out


# Arrow type of a table column -> converter to Feast `Value` protos, matching the Feast types of
# feature_repo.views._FEAST_TYPES (Int64 -> int64_val, Float64 -> double_val, ...).
_CONVERTERS: dict[pa.DataType, Callable[[pa.Array], list[Any]]] = {
    pa.int64(): _scalar("int64_val"),
    pa.int32(): _scalar("int32_val"),
    pa.float64(): _scalar("double_val"),
    pa.float32(): _scalar("float_val"),
    pa.string(): _scalar("string_val"),
    pa.list_(pa.int64()): _int64_lists,
}


def to_values(column: pa.Array) -> list[Any]:
    """Feast `Value` protos, one per row, for an Arrow column of a feature table."""
    dtype = column.type
    if pa.types.is_list(dtype):  # the list's field name (item, element) is not part of the type here
        dtype = pa.list_(dtype.value_type)
    try:
        convert = _CONVERTERS[dtype]
    except KeyError:
        raise TypeError(f"no online conversion for Arrow type {column.type}; add it to _CONVERTERS") from None
    return convert(column)


def online_rows(batch: pa.RecordBatch, view: FeatureView) -> list[OnlineRow]:
    """The (entity key, features, event time, created time) tuples Feast writes for `batch`.

    Args:
        batch: R rows of the view's feature table: its join keys, every feature, `event_timestamp`.
        view: the applied Feast feature view.

    Returns:
        R tuples in row order, as Feast's `_convert_arrow_to_proto` builds them.
    """
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

    keys = [entity.name for entity in view.entity_columns]
    key_values = [to_values(batch.column(name)) for name in keys]
    features = {f.name: to_values(batch.column(f.name)) for f in view.features}
    stamps = batch.column(TIMESTAMP_FIELD).to_pylist()  # tz-aware UTC datetimes
    rows: list[OnlineRow] = []
    for i in range(batch.num_rows):
        key = EntityKey(join_keys=keys, entity_values=[values[i] for values in key_values])
        rows.append((key, {name: values[i] for name, values in features.items()}, stamps[i], None))
    return rows


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # A write allocates hundreds of thousands of short-lived, acyclic protos and tuples; each
    # allocation burst triggers cyclic-GC passes over a heap that holds all of Feast and pandas,
    # up to 3x the write time of (user, category) rows when profiled. Reference counting frees them.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write(store: FeatureStore, view: FeatureView, batch: pa.RecordBatch) -> None:
    """Write one record batch of `view`'s table to the online store (upserts, last write wins)."""
    if batch.num_rows:
        with _gc_paused():
            rows = online_rows(batch, view)
            store.provider.online_write_batch(store.config, view, rows, progress=None)


def bounded(batches: Iterable[pa.RecordBatch], max_bytes: int = WRITE_BYTES) -> Iterator[pa.RecordBatch]:
    """`batches` cut into zero-copy slices of at most ~`max_bytes` Arrow bytes each."""
    for batch in batches:
        row_bytes = max(1, batch.nbytes // max(1, batch.num_rows))
        rows = max(1, max_bytes // row_bytes)
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


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


def use_wal(db_path: Path) -> None:
    """Switch the SQLite online store at `db_path` to write-ahead logging (kept in the file).

    With the default rollback journal every bulk write copies each page it touches to the journal
    first; (user, category) keys land on random pages of a table that grows to GBs, so the write
    slowed with every chunk (0.19 -> 0.33 ms per row over 200k rows). WAL appends changed pages
    instead: 1.7x faster on the same rows, and readers no longer block on a writer.
    """
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise RuntimeError(f"{db_path}: SQLite refused WAL journaling (journal_mode={mode})")
