"""The Amazon reviews adapter (DIN's protocol): reviews + metadata JSON lines -> raw events and items."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.ingest.adapters.common import (
    MS,
    PUBLIC_MIN_TS_MS,
    Prepared,
    adapter_report,
    input_files,
    items_table,
    pick,
    read_json_lines,
    requests,
    sort_order,
    unique_rows,
)


def _din_category(meta: dict) -> str | None:
    """The category DIN's scripts take: the last entry of the item's last category path."""
    paths = meta.get("categories")
    if isinstance(paths, list) and paths and isinstance(paths[-1], list) and paths[-1]:
        last = paths[-1][-1]
        return last if isinstance(last, str) and last.strip() else None
    return None


def amazon(inputs: list[str], negatives: int, seed: int) -> Prepared:
    """Amazon product reviews (McAuley et al.'s 2014 release, e.g. `reviews_Electronics_5.json` and
    `meta_Electronics.json`; the metadata file is the one whose name starts with `meta`).

    Protocol of the DIN paper (Zhou et al. 2018, §6.1 and its data scripts): every review is a
    behavior (a click) and a positive example with sampled negatives (DIN samples one; here
    `negatives`); an item's category is the last entry of its last category path
    (`categories[-1][-1]`). Split per user, not by time: each user's last review is test, as in
    DIN; the one before it is valid (our addition, so early stopping has data).
    """
    files = input_files(inputs)
    meta_path = pick(files, "metadata file (meta*.json)", lambda p: p.name.startswith("meta"))
    review_paths = [p for p in files if p != meta_path]
    if not review_paths:
        raise ValueError("Amazon adapter needs a reviews file besides the metadata")
    sources = [read_json_lines(str(p), ("reviewerID", "asin", "unixReviewTime")) for p in review_paths]
    parts = []
    for rows in sources:
        rows.require_ids("reviewerID", "asin")
        ts = rows.integers("unixReviewTime", "bad_timestamp") * MS
        rows.reject(ts < PUBLIC_MIN_TS_MS, "bad_timestamp", "unixReviewTime")
        rows.finish()
        ok = rows.accepted()
        parts.append(
            pd.DataFrame(
                {
                    "user": rows.column("reviewerID").to_numpy(object)[ok],
                    "item": rows.column("asin").to_numpy(object)[ok],
                    "ts": ts[ok],
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    first = unique_rows([frame[c].to_numpy() for c in frame.columns])
    frame = frame[first]

    meta = read_json_lines(str(meta_path), ("asin",), loose=True)
    meta.require_ids("asin")
    meta.finish()
    ok_meta = meta.accepted()
    meta_items = meta.column("asin").to_numpy(object)[ok_meta].astype(str)
    meta_category = np.array(
        [_din_category(obj) for obj, ok in zip(meta.objects, ok_meta, strict=True) if ok], dtype=object
    )
    named = np.array([c is not None for c in meta_category], bool)

    user = frame["user"].to_numpy().astype(str)
    item = frame["item"].to_numpy().astype(str)
    ts = frame["ts"].to_numpy(np.int64)
    order = sort_order(user, ts, item)
    user, item, ts = user[order], item[order], ts[order]
    events, stats = requests(
        "az",
        user,
        item,
        ts,
        np.full(len(user), "click", dtype=object),
        np.ones(len(user), bool),
        (user, item),
        item,
        negatives,
        seed,
    )
    report = adapter_report(
        "Amazon reviews as in DIN: every review a click and an example with sampled negatives; "
        "category = categories[-1][-1]; per user the last review is test, the one before valid",
        [*sources, meta],
        int((~first).sum()),
        {"item_metadata_rows": int(ok_meta.sum())},
        len(user),
    )
    return Prepared(
        events,
        items_table(meta_items[named], meta_category[named]),
        [*(str(p) for p in review_paths), str(meta_path)],
        [d for rows in [*sources, meta] for d in rows.dead],
        {**report, **stats},
        split_mode="last_per_user",
    )
