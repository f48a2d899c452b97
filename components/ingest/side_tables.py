"""The optional users/items side tables: loading and cleaning them, and their dense outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.ingest.vocab import Lookup, Vocab
from seqrank.schema import ITEMS, PAD, RAW_ITEMS, RAW_USERS, USERS


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
