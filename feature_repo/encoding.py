"""Serialized Feast `Value` protos straight from Arrow columns, and feature-table batches as bulk rows.

Feast's own path goes Arrow -> one Python object per array element -> a type check per element ->
protobuf: for 1,000-event sequences ~80% of a write. Here list columns are encoded with a
vectorized varint encoding into the proto wire format directly; scalars (profile tables, a few
values per row) go through the proto class.

Notation: R rows in a batch, N values of a list column over all rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from feature_repo.bulk import Blob, Rows, entity_keys
from feature_repo.contracts import JOIN_KEYS, TIMESTAMP_FIELD, feature_names


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative Python int (a length prefix)."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _varint_size(n: int) -> int:
    """Bytes of the protobuf varint of the uint64 `n`."""
    size = 1
    while size < 10 and n >= 1 << (7 * size):
        size += 1
    return size


def varints(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Protobuf varint encoding of N int64 `values`, vectorized: the bytes and (N + 1,) byte offsets.

    A negative value is encoded as its two's-complement uint64, in 10 bytes, as protobuf does.
    """
    v = values.astype(np.int64).view(np.uint64)  # (N,)
    width, smallest = (_varint_size(int(v.max())), _varint_size(int(v.min()))) if len(v) else (1, 0)
    if smallest == width:  # (an empty input has smallest 0)
        # Every value has the same size (timestamps of one era, small categories): the bytes are
        # a (N, width) matrix written column by column, no scatter through index arrays.
        matrix = np.empty((len(v), width), dtype=np.uint8)
        for k in range(width):
            matrix[:, k] = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
            if k < width - 1:
                matrix[:, k] |= 0x80
        return matrix.tobytes(), np.arange(0, (len(v) + 1) * width, width, dtype=np.int64)
    sizes = np.ones(len(v), dtype=np.int64)  # bytes per value: 1 + 7-bit groups above the first
    for k in range(1, width):
        sizes += v >= np.uint64(1 << (7 * k))
    offsets = np.zeros(len(v) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    starts = offsets[:-1]
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


def int64_list(values: np.ndarray) -> bytes:
    """The serialized `Value(int64_list_val=Int64List(val=values))` of one int64 array."""
    body, _ = varints(np.asarray(values, dtype=np.int64))
    inner = _VAL_TAG + _varint(len(body)) + body if body else b""  # an empty list has no field
    return _INT64_LIST_VAL_TAG + _varint(len(inner)) + inner


def timestamps(stamps_us: np.ndarray) -> list[bytes]:
    """The serialized `google.protobuf.Timestamp` of each of R epoch-µs times, as
    `Timestamp.FromDatetime` gives them (what Feast's Redis store keeps beside a view's features).

    Field 1 (seconds) and field 2 (nanos) are varints, each left out when 0 as proto3 does; a time
    before 1970 has negative seconds (10 bytes) and nanos from 0 up. One varint pass per field for
    all rows instead of a proto object per row.
    """
    seconds, micros = np.divmod(np.asarray(stamps_us, dtype=np.int64), 1_000_000)
    parts = []
    for tag, values in ((b"\x08", seconds), (b"\x10", micros * 1000)):
        body, bounds = varints(values)
        edges = bounds.tolist()
        parts.append(
            [tag + body[edges[r] : edges[r + 1]] if v else b"" for r, v in enumerate(values.tolist())]
        )
    return [a + b for a, b in zip(*parts, strict=True)]


def _read_varint(blob: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` of `blob` and the position after it; IndexError past the end."""
    value = shift = 0
    while True:
        byte = blob[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _packed_body(blob: bytes) -> int | None:
    """Where the packed varints of a serialized `Value(int64_list_val=...)` start (they run to its
    end), len(blob) for an empty list or an empty Value, None for any other layout."""
    end = len(blob)
    if end == 0:
        return 0
    try:
        if blob[0] != _INT64_LIST_VAL_TAG[0]:
            return None
        inner, pos = _read_varint(blob, 1)
        if pos + inner != end:
            return None
        if inner == 0:
            return end
        if blob[pos] != _VAL_TAG[0]:
            return None
        body, pos = _read_varint(blob, pos + 1)
    except IndexError:
        return None
    return pos if pos + body == end else None


def decode_int64_lists(blobs: Sequence[bytes]) -> list[np.ndarray]:
    """The int64 arrays of R serialized `Value(int64_list_val=...)` protos, decoded together: the
    inverse of `int64_list`, vectorized over all N values (a read of one SIM request's ~200 rows).

    An empty blob (an empty Value) gives an empty array. A blob in any other layout than the
    single packed field protobuf writes (unpacked or split values, another field) is parsed by
    the proto class instead, so every valid encoding reads the same. The arrays are views of one
    buffer. Raises ValueError on bytes that are not varints.
    """
    starts = [_packed_body(blob) for blob in blobs]
    bodies = [blob[start:] for blob, start in zip(blobs, starts, strict=True) if start is not None]
    data = np.frombuffer(b"".join(bodies), dtype=np.uint8)
    bounds = np.zeros(len(bodies) + 1, dtype=np.int64)  # byte range of each packed body
    np.cumsum([len(body) for body in bodies], out=bounds[1:])
    last = data < 0x80  # the last byte of each varint
    ends = np.flatnonzero(last)
    inside = bounds[1:][bounds[1:] > bounds[:-1]] - 1
    if len(inside) and not last[inside].all():
        raise ValueError("a packed int64 list ends inside a varint")
    first = np.zeros(len(ends), dtype=np.int64)
    first[1:] = ends[:-1] + 1
    # Byte k of a varint carries bits 7k..7k+6; bits do not overlap, so a sum is their OR.
    position = np.arange(len(data)) - np.repeat(first, ends - first + 1)
    if len(position) and position.max() >= 10:
        raise ValueError("a varint in a packed int64 list is longer than 10 bytes")
    groups = (data & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    values = (np.add.reduceat(groups, first) if len(first) else groups).view(np.int64)
    counted = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum(last, out=counted[1:])
    offsets = counted[bounds].tolist()  # (R' + 1,) value range of each packed body
    out: list[np.ndarray] = []
    packed = iter(range(len(bodies)))
    for blob, start in zip(blobs, starts, strict=True):
        if start is None:
            out.append(_proto_int64_list(blob))
        else:
            i = next(packed)
            out.append(values[offsets[i] : offsets[i + 1]])
    return out


def _proto_int64_list(blob: bytes) -> np.ndarray:
    from feast.protos.feast.types.Value_pb2 import Value

    field = Value.FromString(blob).int64_list_val.val
    return np.fromiter(field, dtype=np.int64, count=len(field))


def _varint_sizes(n: np.ndarray) -> np.ndarray:
    """Bytes of the protobuf varint of each non-negative value in `n`."""
    sizes = np.ones(len(n), dtype=np.int64)
    for k in range(1, 10):
        sizes += n >= (1 << (7 * k))
    return sizes


def _int64_lists(column: pa.Array) -> list[Blob]:
    """One serialized `Value(int64_list_val=...)` per row of a list<int64> column of R rows (N values).

    Building `Int64List(val=[...])` from Python ints costs ~150 ns per element (most of a write of
    1,000-event sequences). Here all values are varint-encoded at once, and each row's framing
    (Value field 14 around Int64List field 1, both length-prefixed) is laid around its bytes in
    one buffer with numpy; Python only slices the buffer into R bytes objects.
    """
    offsets = column.offsets.to_numpy()  # (R + 1,), may start above 0 in a sliced batch
    values = column.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]  # (N,)
    packed, byte_offsets = varints(values)
    bounds = byte_offsets[offsets - offsets[0]]  # (R + 1,) byte range of every row's packed values
    body = np.diff(bounds)  # (R,)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    # An empty list has no Int64List field; a null row is an empty Value (as Feast writes them).
    inner = np.where(body > 0, 1 + _varint_sizes(body) + body, 0)
    header = np.zeros((len(body), 22), dtype=np.uint8)  # tag, varint(inner), tag, varint(body)
    width = np.zeros(len(body), dtype=np.int64)
    for field_tag, length, present in ((_INT64_LIST_VAL_TAG[0], inner, valid), (_VAL_TAG[0], body, body > 0)):
        rows = np.flatnonzero(present)
        header[rows, width[rows]] = field_tag
        width[rows] += 1
        encoded, ends = varints(length[rows])
        encoded_bytes = np.frombuffer(encoded, dtype=np.uint8)
        sizes = np.diff(ends)
        for k in range(int(sizes.max()) if len(sizes) else 0):
            has = sizes > k
            header[rows[has], width[rows[has]] + k] = encoded_bytes[ends[:-1][has] + k]
        width[rows] += sizes
    # Headers packed back to back; each row is then its header slice + its slice of the values,
    # a bytearray (see Blob).
    heads = bytearray(header[np.arange(header.shape[1]) < width[:, None]])
    values = bytearray(packed)
    head_edges = np.concatenate(([0], np.cumsum(width))).tolist()
    edges = bounds.tolist()
    return [
        heads[head_edges[i] : head_edges[i + 1]] + values[edges[i] : edges[i + 1]] if valid[i] else b""
        for i in range(len(body))
    ]


def _scalar(field: str) -> Callable[[pa.Array], list[Blob]]:
    def convert(column: pa.Array) -> list[Blob]:
        from feast.protos.feast.types.Value_pb2 import Value

        # A null becomes an empty Value, as Feast's own conversion writes it (reads give None).
        return [b"" if v is None else Value(**{field: v}).SerializeToString() for v in column.to_pylist()]

    return convert


def _framed(tag: int, body: bytes, bounds: list[int], valid: np.ndarray) -> list[Blob]:
    """Per row its field `tag` byte + its slice `bounds[r]:bounds[r + 1]` of `body`, b"" where not `valid`."""
    head = bytes([tag])
    return [head + body[bounds[r] : bounds[r + 1]] if ok else b"" for r, ok in enumerate(valid.tolist())]


def _varint_scalar(tag: int) -> Callable[[pa.Array], list[Blob]]:
    """Encoder of an int64 or int32 `Value` field (a varint; negatives in 10 bytes, as protobuf
    writes an int32 too), for all R rows at once instead of a proto object per value."""

    def convert(column: pa.Array) -> list[Blob]:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        body, bounds = varints(column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64))
        return _framed(tag, body, bounds.tolist(), valid)

    return convert


def _fixed_scalar(tag: int, dtype: str) -> Callable[[pa.Array], list[Blob]]:
    """Encoder of a double or float `Value` field (fixed-width little-endian), for all R rows at once."""

    def convert(column: pa.Array) -> list[Blob]:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        values = column.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype)
        width = values.itemsize
        return _framed(tag, values.tobytes(), list(range(0, (len(values) + 1) * width, width)), valid)

    return convert


# Wire tags (field number << 3 | wire type) of Value's scalar fields: int32_val 3 and int64_val 4
# are varints (0), double_val 5 is 64-bit (1), float_val 6 is 32-bit (5).
_INT32_VAL, _INT64_VAL, _DOUBLE_VAL, _FLOAT_VAL = 3 << 3, 4 << 3, 5 << 3 | 1, 6 << 3 | 5


# Arrow type of a table column -> encoder of serialized `Value` protos, matching the Feast types of
# feature_repo.views._FEAST_TYPES (Int64 -> int64_val, Float64 -> double_val, ...).
_ENCODERS: dict[pa.DataType, Callable[[pa.Array], list[Blob]]] = {
    pa.int64(): _varint_scalar(_INT64_VAL),
    pa.int32(): _varint_scalar(_INT32_VAL),
    pa.float64(): _fixed_scalar(_DOUBLE_VAL, "<f8"),
    pa.float32(): _fixed_scalar(_FLOAT_VAL, "<f4"),
    pa.string(): _scalar("string_val"),
    pa.list_(pa.int64()): _int64_lists,
}


def value_bytes(column: pa.Array) -> list[Blob]:
    """Serialized Feast `Value` protos, one per row, for an Arrow column of a feature table."""
    dtype = column.type
    if pa.types.is_list(dtype):  # the list's field name (item, element) is not part of the type here
        dtype = pa.list_(dtype.value_type)
    try:
        encode = _ENCODERS[dtype]
    except KeyError:
        raise TypeError(f"no online conversion for Arrow type {column.type}; add it to _ENCODERS") from None
    return encode(column)


def value_texts(column: pa.Array) -> list[str | None]:
    """What Feast's SQLite store writes to `value_text`: a scalar as `str`, lists and nulls None.

    Feast takes `str()` of the decoded proto field; Arrow's Python values are the same numbers (a
    float32 widened to a Python float, as the proto getter gives it), so no proto is decoded here.
    """
    if pa.types.is_list(column.type):
        return [None] * len(column)
    if pa.types.is_string(column.type):
        return column.to_pylist()
    return [None if v is None else str(v) for v in column.to_pylist()]


def batch_rows(view: str, batch: pa.RecordBatch) -> Rows:
    """R rows of `view`'s feature table as a bulk write takes them: keys, values, texts, times (and
    digests, computed when a store that keeps them asks)."""
    keys = entity_keys(JOIN_KEYS[view], [batch.column(k).to_numpy() for k in JOIN_KEYS[view]])
    values: dict[str, list[Blob]] = {}
    texts: dict[str, list[str | None]] = {}
    for name in feature_names(view):
        column = batch.column(name)
        values[name] = value_bytes(column)
        texts[name] = value_texts(column)
    stamps = batch.column(TIMESTAMP_FIELD).cast(pa.timestamp("us", tz="UTC"))
    stamps_us = stamps.cast(pa.int64()).to_numpy()
    return Rows(keys, values, texts, stamps_us)
