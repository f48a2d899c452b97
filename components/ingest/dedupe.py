"""Stable hashing of ids into dedup buckets and user shards, and exact duplicate removal."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.ingest.arrow_utils import concat, valid
from components.ingest.records import CLEAN

# Duplicates without an event_id are identical in every one of these.
CONTENT_KEYS = ("ts", "user_id", "item_id", "type", "request_id", "position", "category_id")


# Odd 64-bit constants: the polynomial base and the finalizer of splitmix64 (Steele et al., 2014).
_BASE = np.uint64(0x100000001B3)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def stable_hash(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hash of each string's UTF-8 bytes that every worker process agrees on.

    Python's `hash` is salted per process. This is a polynomial over the bytes, computed on the
    Arrow buffers with numpy (no Python string per row), then mixed so that `% n` spreads well.
    Nulls hash like the empty string.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + n + 1]
    lengths = np.diff(offsets)
    h = lengths.astype(np.uint64)
    nonempty = np.flatnonzero(lengths)
    if len(nonempty):
        first, last = int(offsets[0]), int(offsets[-1])
        data = np.frombuffer(arr.buffers()[2], np.uint8)[first:last].astype(np.uint64)
        pos = np.arange(last - first) - np.repeat(offsets[:-1] - first, lengths)
        powers = np.cumprod(np.full(int(lengths.max()), _BASE, np.uint64))
        terms = (data + np.uint64(1)) * powers[pos]
        h[nonempty] ^= np.add.reduceat(terms, offsets[:-1][nonempty] - first)
    h ^= h >> np.uint64(30)
    h *= _MIX1
    h ^= h >> np.uint64(27)
    h *= _MIX2
    h ^= h >> np.uint64(31)
    return h


def _hash_mod(arr: pa.Array | pa.ChunkedArray, n: int) -> np.ndarray:
    """stable_hash(arr) % n as int64."""
    return (stable_hash(arr) % np.uint64(n)).astype(np.int64)


def dedup_keys(events: pa.Table, n_buckets: int) -> np.ndarray:
    """Dedup bucket (0..n_buckets-1) of each event, such that all copies of one event share it.

    Copies share an event_id, or (without one) their whole content and so their user_id.
    """
    key = pc.coalesce(events.column("event_id"), events.column("user_id"))
    return _hash_mod(key, n_buckets)


def user_shards(events: pa.Table, n_shards: int) -> np.ndarray:
    """User shard (0..n_shards-1) of each event: a function of the raw user id alone."""
    return _hash_mod(events.column("user_id"), n_shards)


def dedup(tables: Iterable[pa.Table]) -> tuple[pa.Table, int]:
    """Drop duplicates, keeping the copy read first; -> (unique events, duplicates dropped)."""
    events = concat(list(tables), CLEAN)
    has_id = valid(events.column("event_id"))
    drop = []
    with_id = events if has_id.all() else events.filter(has_id)
    if with_id.num_rows:
        drop.append(_later_copies(with_id, stable_hash(with_id.column("event_id")), ["event_id"]))
    without = events.filter(~has_id) if not has_id.all() else None
    if without is not None and without.num_rows:
        drop.append(_later_copies(without, _content_hash(without), list(CONTENT_KEYS)))
    dropped = np.concatenate(drop) if drop else np.zeros(0, np.int64)
    if not len(dropped):
        return events, 0
    unique = events.filter(pc.invert(pc.is_in(events.column("seq"), value_set=pa.array(dropped))))
    return unique, events.num_rows - unique.num_rows


def _later_copies(events: pa.Table, key_hash: np.ndarray, keys: list[str]) -> np.ndarray:
    """seq of every copy but the first of each group of events equal in `keys`.

    Only events whose key hash is shared can have a copy; the exact comparison runs on those.
    """
    ordered = np.sort(key_hash)
    shared = ordered[1:][ordered[1:] == ordered[:-1]]
    if not len(shared):
        return np.zeros(0, np.int64)
    suspects = events.filter(np.isin(key_hash, shared))
    first = suspects.group_by(keys, use_threads=False).aggregate([("seq", "min")]).column("seq_min")
    seq = suspects.column("seq")
    return np.asarray(seq.filter(pc.invert(pc.is_in(seq, value_set=first))).to_numpy(), np.int64)


def _content_hash(events: pa.Table) -> np.ndarray:
    """A hash of CONTENT_KEYS per event: equal content, equal hash (nulls hash like empty ids or 0)."""
    h = np.zeros(events.num_rows, np.uint64)
    for name in CONTENT_KEYS:
        col = events.column(name)
        if pa.types.is_string(col.type):
            part = stable_hash(col)
        else:
            part = pc.fill_null(col, 0).to_numpy().astype(np.int64).view(np.uint64)
        h = (h ^ part) * _MIX1
    return h
