"""The Taobao UserBehavior adapter: UserBehavior.csv -> raw events and an items table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.ingest.adapters.common import (
    MS,
    Prepared,
    adapter_report,
    input_files,
    items_table,
    read_csv,
    requests,
    sort_order,
    unique_rows,
)

# Taobao UserBehavior covers 2017-11-25 to 2017-12-03 in China time (UTC+8); rows outside are noise.
TAOBAO_START_MS = 1_511_539_200_000  # 2017-11-25T00:00:00+08:00
TAOBAO_END_MS = 1_512_316_800_000  # 2017-12-04T00:00:00+08:00
TAOBAO_BEHAVIORS = {"pv": "click", "cart": "cart", "fav": "fav", "buy": "buy"}


def taobao(inputs: list[str], negatives: int, seed: int) -> Prepared:
    """Taobao UserBehavior (Tianchi data set 649: `UserBehavior.csv`, no header,
    `user_id,item_id,category_id,behavior_type,timestamp` with behavior pv/cart/fav/buy, ts in s).

    Protocol (as in the data set's description and the DIN/DIEN/MIMN line of work on it): pv is a
    click, cart/fav/buy keep their types, all four are behaviors; each pv is a positive example
    with `negatives` sampled items the user never touched. Rows outside the published period
    (2017-11-25 to 2017-12-03, China time) are filtered, as the data set's notes advise.
    Categories come with every row. Split: time-based.
    """
    files = input_files(inputs)
    sources = [read_csv(str(p), ["user", "item", "category", "behavior", "ts"], header=False) for p in files]
    parts = []
    for rows in sources:
        rows.require_ids("user", "item", "category")
        behavior = rows.column("behavior").fillna("").str.strip().to_numpy(object)
        rows.reject(~np.isin(behavior, list(TAOBAO_BEHAVIORS)), "unknown_event_type", "behavior")
        ts = rows.integers("ts", "bad_timestamp") * MS
        rows.finish()
        ok = rows.accepted()
        parts.append(
            pd.DataFrame(
                {
                    "user": rows.column("user").to_numpy(object)[ok],
                    "item": rows.column("item").to_numpy(object)[ok],
                    "category": rows.column("category").to_numpy(object)[ok],
                    "kind": behavior[ok],
                    "ts": ts[ok],
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["user", "item"])
    first = unique_rows([frame[c].to_numpy() for c in frame.columns])
    frame = frame[first]
    inside = ((frame["ts"] >= TAOBAO_START_MS) & (frame["ts"] < TAOBAO_END_MS)).to_numpy()
    frame = frame[inside]
    user = frame["user"].to_numpy().astype(str)
    item = frame["item"].to_numpy().astype(str)
    ts = frame["ts"].to_numpy(np.int64)
    order = sort_order(user, ts, item)
    user, item, ts = user[order], item[order], ts[order]
    kind = np.array([TAOBAO_BEHAVIORS[k] for k in frame["kind"].to_numpy()[order]], dtype=object)
    category = frame["category"].to_numpy().astype(str)[order]
    events, stats = requests(
        "tb", user, item, ts, kind, kind == "click", (user, item), item, negatives, seed, category
    )
    # One category per item in the data set; the latest row's wins should two rows disagree.
    latest = pd.DataFrame({"item": item, "category": category, "ts": ts}).sort_values("ts", kind="stable")
    latest = latest.drop_duplicates("item", keep="last").sort_values("item")
    report = adapter_report(
        "Taobao UserBehavior: pv=click, cart/fav/buy behaviors; each pv an example with sampled "
        "negatives; published period only; time-based split",
        sources,
        int((~first).sum()),
        {"outside_period": int((~inside).sum())},
        len(user),
    )
    return Prepared(
        events,
        items_table(latest["item"].to_numpy(), latest["category"].to_numpy()),
        [str(p) for p in files],
        [d for rows in sources for d in rows.dead],
        {**report, **stats},
        min_ts_ms=TAOBAO_START_MS,
    )
