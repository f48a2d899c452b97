"""The work inside ingest's Beam steps, as plain functions over Arrow tables and numpy arrays.

Each call handles a whole batch (a task's events, a dedup bucket, a user shard), never a single
event: per-element Beam overhead is paid per batch, and per-user work runs as vectorized numpy
over every user of a shard at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.ingest.records import CLEAN
from seqrank.schema import (
    BEHAVIORS,
    EXAMPLES,
    ITEM_STATS,
    ITEMS,
    PAD,
    RAW_ITEMS,
    RAW_USERS,
    SPLITS,
    USERS,
    VOCAB,
    VOCAB_ENTITIES,
    check_schema,
)

# Duplicates without an event_id are identical in every one of these.
CONTENT_KEYS = ("ts", "user_id", "item_id", "type", "request_id", "position", "category_id")
CLICK = 1
UNKNOWN_POSITION = -1

# Accepted events in dense indices, as they travel to the per-user shards.
ENCODED = pa.schema(
    [
        pa.field("user", pa.int64(), nullable=False),
        pa.field("item", pa.int64(), nullable=False),
        pa.field("category", pa.int64(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("type", pa.int8(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("seq", pa.int64(), nullable=False),
    ]
)


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


# ---- duplicates ---------------------------------------------------------------------------------


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
    events = _concat(list(tables), CLEAN)
    has_id = _valid(events.column("event_id"))
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


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables).combine_chunks()


# ---- ids, time range, vocab ---------------------------------------------------------------------


@dataclass
class Ids:
    """Distinct raw ids of some events, and each item's category from its latest event."""

    user: pa.Array
    item: pa.Array
    category: pa.Array
    item_category: pa.Table  # item_id, category_id, ts, seq: the latest event that names a category


_ITEM_CATEGORY = pa.schema(
    [("item_id", pa.string()), ("category_id", pa.string()), ("ts", pa.int64()), ("seq", pa.int64())]
)


def _unique(arrays: Iterable[pa.Array | pa.ChunkedArray]) -> pa.Array:
    parts = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays]
    if not parts:
        return pa.array([], pa.string())
    return pc.unique(pa.concat_arrays([p.cast(pa.string()) for p in parts])).drop_null()


def _latest_category(table: pa.Table) -> pa.Table:
    """Per item, the row with the greatest (ts, seq): two passes of per-item maxima, no sort."""
    if table.num_rows == 0:
        return _ITEM_CATEGORY.empty_table()
    table = table.combine_chunks()
    encoded = pc.dictionary_encode(table.column("item_id").combine_chunks())
    code = encoded.indices.to_numpy()
    ts = table.column("ts").to_numpy()
    seq = table.column("seq").to_numpy()
    n_items = len(encoded.dictionary)
    low = np.iinfo(np.int64).min
    max_ts = np.full(n_items, low, np.int64)
    np.maximum.at(max_ts, code, ts)
    at_max = ts == max_ts[code]
    max_seq = np.full(n_items, low, np.int64)
    np.maximum.at(max_seq, code[at_max], seq[at_max])
    latest = np.flatnonzero(at_max & (seq == max_seq[code]))
    return table.take(pa.array(latest)).select(_ITEM_CATEGORY.names).cast(_ITEM_CATEGORY)


def collect_ids(events: pa.Table) -> Ids:
    named = events.filter(events.column("category_id").is_valid())
    return Ids(
        user=_unique([events.column("user_id")]),
        item=_unique([events.column("item_id")]),
        category=_unique([events.column("category_id")]),
        item_category=_latest_category(named.select(_ITEM_CATEGORY.names)),
    )


def merge_ids(parts: list[Ids]) -> Ids:
    return Ids(
        user=_unique(p.user for p in parts),
        item=_unique(p.item for p in parts),
        category=_unique(p.category for p in parts),
        item_category=_latest_category(_concat([p.item_category for p in parts], _ITEM_CATEGORY)),
    )


def empty_ids() -> Ids:
    return merge_ids([])


@dataclass
class SideTables:
    """The optional users/items side tables, cleaned: string ids, one row per id."""

    users: pa.Table
    items: pa.Table
    info: dict[str, Any] = field(default_factory=dict)


def _clean_side(table: pa.Table, schema: pa.Schema, key: str, what: str) -> pa.Table:
    missing = [f.name for f in schema if not f.nullable and f.name not in table.column_names]
    if missing:
        raise ValueError(f"{what} table lacks required column(s) {missing}; expected {schema}")
    columns = {}
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name).combine_chunks()
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            columns[f.name] = col.cast(f.type)
        else:
            columns[f.name] = pa.nulls(table.num_rows, f.type)
    out = pa.table(columns)
    ids = out.column(key)
    out = out.filter(pc.and_(ids.is_valid(), pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0)))
    # The first row of an id wins, as the first copy of a duplicate event does.
    out = out.append_column("_row", pa.array(np.arange(out.num_rows)))
    first = out.group_by(key, use_threads=False).aggregate([("_row", "min")]).column("_row_min")
    return out.filter(pc.is_in(out.column("_row"), value_set=first)).drop_columns(["_row"])


def load_side_tables(users: str | None, items: str | None) -> SideTables:
    info: dict[str, Any] = {}
    tables = {}
    for name, path, schema, key in (
        ("users", users, RAW_USERS, "user_id"),
        ("items", items, RAW_ITEMS, "item_id"),
    ):
        if path is None:
            tables[name] = schema.empty_table()
            continue
        raw = pq.read_table(path)
        tables[name] = _clean_side(raw, schema, key, f"{name} side table {path}")
        info[name] = {"rows": raw.num_rows, "used": tables[name].num_rows}
    return SideTables(tables["users"], tables["items"], info)


def load_vocab_dir(vocab_dir: str | None) -> dict[str, pa.Array]:
    """A previous run's vocab: entity -> raw ids in index order; checks indices are 1..n."""
    if vocab_dir is None:
        return {}
    previous = {}
    for entity in VOCAB_ENTITIES:
        path = Path(vocab_dir) / f"{entity}.parquet"
        if not path.exists():
            continue
        table = pq.read_table(path)
        check_schema(table, VOCAB, str(path))
        table = table.sort_by("index")
        index = table.column("index").to_numpy()
        if not np.array_equal(index, np.arange(1, len(index) + 1)):
            raise ValueError(f"vocab {path}: indices must be exactly 1..{len(index)} (0 is reserved)")
        raw = table.column("raw").combine_chunks()
        if pc.count_distinct(raw).as_py() != len(raw) or raw.null_count:
            raise ValueError(f"vocab {path}: raw ids must be unique and non-null")
        previous[entity] = raw
    return previous


@dataclass
class Vocab:
    """raw id -> dense index per entity (index = position in `raw` + 1; 0 is PAD/unknown)."""

    raw: dict[str, pa.Array]
    previous_size: dict[str, int]
    item_category: np.ndarray  # item index -> category index from the items table, PAD when unlisted
    seen_category: np.ndarray  # item index -> category of the item's latest event naming one, or PAD
    ids: Ids
    token: str  # identifies this vocab so workers can cache lookups built from it

    def size(self, entity: str) -> int:
        return len(self.raw[entity])


def build_vocab(ids: Ids, previous: dict[str, pa.Array], side: SideTables) -> Vocab:
    """Keep every previous index, append this run's new ids in sorted order."""
    seen = {
        "user": [ids.user, side.users.column("user_id")],
        "item": [ids.item, side.items.column("item_id")],
        "category": [ids.category, side.items.column("category_id")],
        "brand": [side.items.column("brand_id")],
    }
    raw = {}
    previous_size = {}
    for entity in VOCAB_ENTITIES:
        old = previous.get(entity, pa.array([], pa.string()))
        candidates = _unique(seen[entity])
        candidates = candidates.filter(pc.greater(pc.utf8_length(candidates), 0))
        new = candidates.filter(pc.invert(pc.is_in(candidates, value_set=old)))
        new = new.take(pc.sort_indices(new))
        raw[entity] = pa.concat_arrays([old.cast(pa.string()), new])
        previous_size[entity] = len(old)
    vocab = Vocab(raw, previous_size, np.zeros(0, np.int64), np.zeros(0, np.int64), ids, uuid.uuid4().hex)
    lookup = Lookup()
    vocab.item_category = _category_of(
        vocab, lookup, side.items.column("item_id"), side.items.column("category_id")
    )
    latest = ids.item_category
    vocab.seen_category = _category_of(vocab, lookup, latest.column("item_id"), latest.column("category_id"))
    return vocab


def _category_of(vocab: Vocab, lookup: Lookup, item_ids: Any, category_ids: Any) -> np.ndarray:
    """item index -> category index for the (item, category) pairs given, PAD elsewhere."""
    table = np.full(vocab.size("item") + 1, PAD, np.int64)
    if len(item_ids):
        table[lookup(vocab, "item", item_ids)] = lookup(vocab, "category", category_ids)
    table[PAD] = PAD
    return table


class Lookup:
    """raw ids -> dense indices, caching the hash index of the last vocab seen."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._index: dict[str, pd.Index] = {}

    def __call__(self, vocab: Vocab, entity: str, raw: pa.Array | pa.ChunkedArray) -> np.ndarray:
        if self._token != vocab.token:
            self._token, self._index = vocab.token, {}
        if entity not in self._index:
            self._index[entity] = pd.Index(vocab.raw[entity].to_numpy(zero_copy_only=False))
        if isinstance(raw, pa.ChunkedArray):
            raw = raw.combine_chunks()
        # Look up each distinct id once: event columns repeat ids many times over.
        encoded = pc.dictionary_encode(raw)
        # get_indexer gives -1 for unknown ids, so +1 lands on PAD; the extra last slot is for nulls.
        found = self._index[entity].get_indexer(encoded.dictionary.to_numpy(zero_copy_only=False)) + 1
        per_value = np.append(found.astype(np.int64), PAD)
        codes = pc.fill_null(encoded.indices, len(found)).to_numpy(zero_copy_only=False)
        return per_value[codes]


def vocab_tables(vocab: Vocab) -> dict[str, pa.Table]:
    return {
        entity: pa.table(
            {
                "raw": vocab.raw[entity],
                "index": pa.array(np.arange(1, vocab.size(entity) + 1, dtype=np.int64)),
            },
            schema=VOCAB,
        )
        for entity in VOCAB_ENTITIES
    }


def side_outputs(vocab: Vocab, side: SideTables) -> tuple[pa.Table, pa.Table]:
    """users/ and items/ in dense indices: the side tables plus every id seen in events."""
    lookup = Lookup()
    listed_users = lookup(vocab, "user", side.users.column("user_id"))
    seen_users = lookup(vocab, "user", vocab.ids.user)
    extra_users = np.setdiff1d(seen_users, listed_users)
    users = pa.concat_tables(
        [
            pa.table(
                {
                    "user": pa.array(listed_users),
                    "age_bucket": side.users.column("age_bucket"),
                    "gender": side.users.column("gender"),
                },
                schema=USERS,
            ),
            pa.table(
                {
                    "user": pa.array(extra_users),
                    "age_bucket": pa.nulls(len(extra_users), pa.int32()),
                    "gender": pa.nulls(len(extra_users), pa.string()),
                },
                schema=USERS,
            ),
        ]
    ).sort_by("user")

    listed_items = lookup(vocab, "item", side.items.column("item_id"))
    seen_items = lookup(vocab, "item", vocab.ids.item)
    extra_items = np.setdiff1d(seen_items, listed_items)
    # Items only the events know get the category of their latest event that names one.
    items = pa.concat_tables(
        [
            pa.table(
                {
                    "item": pa.array(listed_items),
                    "category": pa.array(vocab.item_category[listed_items]),
                    "brand": pa.array(lookup(vocab, "brand", side.items.column("brand_id"))),
                    "price": side.items.column("price"),
                },
                schema=ITEMS,
            ),
            pa.table(
                {
                    "item": pa.array(extra_items),
                    "category": pa.array(vocab.seen_category[extra_items]),
                    "brand": pa.array(np.full(len(extra_items), PAD, np.int64)),
                    "price": pa.nulls(len(extra_items), pa.float64()),
                },
                schema=ITEMS,
            ),
        ]
    ).sort_by("item")
    return users, items


def time_range(events: pa.Table) -> tuple[int, int] | None:
    if events.num_rows == 0:
        return None
    bounds = pc.min_max(events.column("ts")).as_py()
    return int(bounds["min"]), int(bounds["max"])


def split_bounds(t_min: int, t_max: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(valid_start, test_start) in epoch ms: the last test_fraction of [t_min, t_max] is test."""
    span = t_max - t_min
    test_start = t_max - int(span * test_fraction)
    return test_start - int(span * valid_fraction), test_start


# ---- dense encoding and the per-user work -------------------------------------------------------


def encode(events: pa.Table, vocab: Vocab, lookup: Lookup) -> pa.Table:
    """Raw ids -> dense indices (ENCODED schema)."""
    user = lookup(vocab, "user", events.column("user_id"))
    item = lookup(vocab, "item", events.column("item_id"))
    # The items table is the authority on an item's category; then the event's own category_id;
    # then the category the item's latest event named, so an event that omits it is not left at PAD.
    category = vocab.item_category[item]
    own = lookup(vocab, "category", events.column("category_id"))
    category = np.where(category != PAD, category, own)
    category = np.where(category != PAD, category, vocab.seen_category[item])
    table = pa.table(
        {
            "user": pa.array(user),
            "item": pa.array(item),
            "category": pa.array(category),
            "ts": events.column("ts"),
            "type": events.column("type"),
            "position": pc.fill_null(events.column("position"), UNKNOWN_POSITION),
            "event_id": events.column("event_id"),
            "request_id": events.column("request_id"),
            "seq": events.column("seq"),
        },
        schema=ENCODED,
    )
    return table


# ---- item statistics ----------------------------------------------------------------------------

DAY_MS = 86_400_000
# Per (item, UTC day) counts of some events; partial sums merge by adding.
ITEM_DAYS = pa.schema(
    [
        pa.field("item", pa.int64(), nullable=False),
        pa.field("day", pa.int64(), nullable=False),
        pa.field("impressions", pa.int64(), nullable=False),
        pa.field("clicks", pa.int64(), nullable=False),
    ]
)


def item_day_counts(encoded: pa.Table) -> pa.Table:
    """Impressions and clicks per (item, UTC day) of a batch of encoded events."""
    etype = encoded.column("type").to_numpy()
    counts = pa.table(
        {
            "item": encoded.column("item"),
            "day": pa.array(np.floor_divide(encoded.column("ts").to_numpy(), DAY_MS)),
            "impressions": pa.array((etype == 0).astype(np.int64)),
            "clicks": pa.array((etype == CLICK).astype(np.int64)),
        }
    )
    return merge_item_days([counts])


def merge_item_days(parts: list[pa.Table]) -> pa.Table:
    """Sum partial counts per (item, day).

    Built from fresh numpy arrays: partial sums travel between Beam stages, and a pickled Arrow
    table carries every byte of the buffers its columns point into, not only the rows it shows.
    """
    counts = _concat(parts, ITEM_DAYS)
    if counts.num_rows == 0:
        return ITEM_DAYS.empty_table()
    item = counts.column("item").to_numpy()
    day = counts.column("day").to_numpy()
    first_day = int(day.min())
    # One int64 key per (item, day): item indices and the days of one log are both small.
    span = int(day.max()) - first_day + 1
    key = item * span + (day - first_day)
    impressions = counts.column("impressions").to_numpy()
    clicks = counts.column("clicks").to_numpy()
    n_keys = (int(item.max()) + 1) * span
    if n_keys <= max(4 * len(key), 1 << 22):
        # Dense enough to count in an array indexed by key: no sort. Sums are exact in float64
        # far beyond any real count (2**53).
        imp_sum = np.bincount(key, impressions, n_keys)
        clk_sum = np.bincount(key, clicks, n_keys)
        keys = np.flatnonzero(np.bincount(key, minlength=n_keys))
        imp_sum, clk_sum = imp_sum[keys].astype(np.int64), clk_sum[keys].astype(np.int64)
    else:
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]
        starts = np.flatnonzero(first)
        keys = key[starts]
        imp_sum = np.add.reduceat(impressions[order], starts)
        clk_sum = np.add.reduceat(clicks[order], starts)
    return pa.table(
        {
            "item": pa.array(keys // span),
            "day": pa.array(keys % span + first_day),
            "impressions": pa.array(imp_sum),
            "clicks": pa.array(clk_sum),
        },
        schema=ITEM_DAYS,
    )


def item_stats(counts: pa.Table) -> pa.Table:
    """Point-in-time daily snapshots (ITEM_STATS) for every (item, day) with impressions.

    A snapshot's `ts` is the first instant after its day: every event it counts lies strictly
    before it, so a point-in-time join (feature ts <= example ts) never lets an example see its
    own impression or anything later. Running totals also count clicks of days without
    impressions, which get no row of their own.
    """
    counts = counts.sort_by([("item", "ascending"), ("day", "ascending")])
    item = counts.column("item").to_numpy()
    day = counts.column("day").to_numpy()
    impressions = counts.column("impressions").to_numpy()
    clicks = counts.column("clicks").to_numpy()
    n = len(item)
    first = np.ones(n, bool)
    first[1:] = item[1:] != item[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))

    def running(values: np.ndarray) -> np.ndarray:
        total = np.cumsum(values)
        return total - (total[start] - values[start])

    keep = impressions > 0
    return pa.table(
        {
            "item": pa.array(item[keep]),
            "ts": pa.array((day[keep] + 1) * DAY_MS),
            "impressions_1d": pa.array(impressions[keep]),
            "clicks_1d": pa.array(clicks[keep]),
            "impressions_total": pa.array(running(impressions)[keep]),
            "clicks_total": pa.array(running(clicks)[keep]),
        },
        schema=ITEM_STATS,
    )


@dataclass
class ShardOutput:
    behaviors: pa.Table
    examples: pa.Table
    stats: dict[str, int]


def _list_column(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, value_type))


def _labels(
    imp: np.ndarray,
    click: np.ndarray,
    gid: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    request: pa.Array,
    window_ms: int,
) -> np.ndarray:
    """label per impression (indices `imp`), given click indices and events sorted by (user, ts, seq)."""
    labels = np.zeros(len(imp), np.int8)
    n_item = int(item.max()) + 1 if len(item) else 1
    has_request = _valid(request)
    # (user, request_id, item): a click in the same request on the same item.
    codes = pc.fill_null(pc.dictionary_encode(request).indices, -1).to_numpy(zero_copy_only=False)
    pair, _ = pd.factorize(codes.astype(np.int64) * (int(gid.max()) + 1 if len(gid) else 1) + gid)
    key = pair.astype(np.int64) * n_item + item
    with_request = has_request[imp]
    clicked = np.unique(key[click[has_request[click]]])
    labels[with_request] = np.isin(key[imp[with_request]], clicked, assume_unique=False)

    # No request_id: a click by the same user on the same item, at most window_ms later.
    lone = imp[~with_request]
    if len(lone) and len(click):
        rows = np.concatenate([lone, click])
        is_click = np.concatenate([np.zeros(len(lone), bool), np.ones(len(click), bool)])
        user_item = gid[rows].astype(np.int64) * n_item + item[rows]
        # Impressions sort before clicks at the same ms, so a click in the same ms credits them.
        order = np.lexsort((is_click, ts[rows], user_item))
        s_click = is_click[order]
        s_key = user_item[order]
        s_ts = ts[rows][order]
        m = len(order)
        candidate = np.where(s_click, np.arange(m), m)
        next_click = np.minimum.accumulate(candidate[::-1])[::-1]
        found = next_click < m
        nxt = np.minimum(next_click, m - 1)
        hit = found & (s_key[nxt] == s_key) & (s_ts[nxt] - s_ts <= window_ms)
        lone_hit = np.zeros(len(rows), bool)
        lone_hit[order] = hit
        labels[np.flatnonzero(~with_request)] = lone_hit[: len(lone)]
    return labels


def _valid(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return arr.is_valid().to_numpy(zero_copy_only=False).astype(bool, copy=False)


SPLIT_MODES = ("time", "last_per_user")


def _last_per_user_split(gid: np.ndarray, ts: np.ndarray, n_users: int) -> np.ndarray:
    """Split codes for impressions sorted by (user, ts): a user's latest ts is test, the one before valid."""
    split = np.zeros(len(gid), np.int8)
    if not len(gid):
        return split
    # Rank each distinct (user, ts) from the user's end: 0 for the latest, 1 for the one before.
    new_key = np.ones(len(gid), bool)
    new_key[1:] = (gid[1:] != gid[:-1]) | (ts[1:] != ts[:-1])
    key = np.cumsum(new_key) - 1
    last_key = np.zeros(n_users, np.int64)
    np.maximum.at(last_key, gid, key)
    rank = last_key[gid] - key
    split[rank == 1] = 1
    split[rank == 0] = 2
    return split


def build_shard(
    tables: Iterable[pa.Table],
    bounds: tuple[int, int] | None,
    gap_ms: int,
    window_ms: int,
    split_mode: str = "time",
) -> ShardOutput:
    """behaviors (one row per user) and examples (one row per impression) for a shard's users.

    `split_mode` "time" splits at the global time bounds; "last_per_user" (the DIN protocol for
    Amazon) makes each user's impressions at their latest timestamp test, those at the one before
    valid, and the rest train.
    """
    events = _concat([t for t in tables if t is not None], ENCODED)
    n = events.num_rows
    user = events.column("user").to_numpy()
    ts = events.column("ts").to_numpy()
    seq = events.column("seq").to_numpy()
    order = np.lexsort((seq, ts, user))
    events = events.take(pa.array(order))
    user, ts = user[order], ts[order]
    item = events.column("item").to_numpy()
    category = events.column("category").to_numpy()
    etype = events.column("type").to_numpy()

    new_user = np.ones(n, bool)
    new_user[1:] = user[1:] != user[:-1]
    gid = np.cumsum(new_user) - 1
    starts = np.flatnonzero(new_user)
    n_users = len(starts)

    # A session ends when the user changes or the next event comes gap_ms or more later (as in
    # Beam's Sessions windows, where windows gap apart do not merge).
    brk = new_user.copy()
    brk[1:] |= np.diff(ts) >= gap_ms
    running = np.cumsum(brk) - 1
    session = (running - running[starts][gid]).astype(np.int32)

    positive = etype > 0
    # Behaviors strictly before ts: count positives before the first event of the same (user, ts).
    before = np.cumsum(positive) - positive
    same_ts_start = new_user.copy()
    same_ts_start[1:] |= ts[1:] != ts[:-1]
    first_of_ts = np.maximum.accumulate(np.where(same_ts_start, np.arange(n), 0))
    hist_end = (before[first_of_ts] - before[starts][gid]).astype(np.int32)

    b = np.flatnonzero(positive)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(gid[b], minlength=n_users))])
    behaviors = pa.table(
        {
            "user": pa.array(user[starts]),
            "item": _list_column(offsets, item[b], pa.int64()),
            "category": _list_column(offsets, category[b], pa.int64()),
            "ts": _list_column(offsets, ts[b], pa.int64()),
            "type": _list_column(offsets, etype[b], pa.int8()),
            "session": _list_column(offsets, session[b], pa.int32()),
        },
        schema=BEHAVIORS,
    )

    imp = np.flatnonzero(etype == 0)
    click = np.flatnonzero(etype == CLICK)
    label = _labels(imp, click, gid, item, ts, events.column("request_id").combine_chunks(), window_ms)
    split = np.zeros(len(imp), np.int8)
    if split_mode == "last_per_user":
        split = _last_per_user_split(gid[imp], ts[imp], n_users)
    elif bounds is not None:
        valid_start, test_start = bounds
        split[ts[imp] >= valid_start] = 1
        split[ts[imp] >= test_start] = 2
    imp_rows = pa.array(imp)
    examples = pa.table(
        {
            "user": pa.array(user[imp]),
            "item": pa.array(item[imp]),
            "category": pa.array(category[imp]),
            "ts": pa.array(ts[imp]),
            "label": pa.array(label),
            "position": events.column("position").take(imp_rows),
            "split": pa.DictionaryArray.from_arrays(pa.array(split), pa.array(SPLITS)).cast(pa.string()),
            "hist_end": pa.array(hist_end[imp]),
            "session": pa.array(session[imp]),
            "event_id": events.column("event_id").take(imp_rows),
            "request_id": events.column("request_id").take(imp_rows),
        },
        schema=EXAMPLES,
    )
    stats = {
        "events": n,
        "users": n_users,
        "behaviors": len(b),
        "sessions": int(brk.sum()),
        "examples": len(imp),
        "positives": int(label.sum()),
        **{f"examples_{name}": int((split == code).sum()) for code, name in enumerate(SPLITS)},
    }
    return ShardOutput(behaviors, examples, stats)
