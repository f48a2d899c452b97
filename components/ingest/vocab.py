"""Raw ids -> dense indices: id collection, the append-only vocab, its lookups and output tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.ingest.arrow_utils import concat
from seqrank.schema import PAD, VOCAB, VOCAB_ENTITIES, check_schema

if TYPE_CHECKING:
    from components.ingest.side_tables import SideTables


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
        item_category=_latest_category(concat([p.item_category for p in parts], _ITEM_CATEGORY)),
    )


def empty_ids() -> Ids:
    return merge_ids([])


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
