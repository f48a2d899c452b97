"""Per-user-shard work: dense encoding of events, click labels, behaviors and examples."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.ingest.arrow_utils import concat, valid
from components.ingest.splits import last_per_user_split
from components.ingest.vocab import Lookup, Vocab
from seqrank.schema import BEHAVIORS, EXAMPLES, PAD, SPLITS

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
    has_request = valid(request)
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


# An open end of a run's date window.
NO_LIMIT = (-(2**62), 2**62)


def clip_span(span: tuple[int, int] | None, run_window: tuple[int, int]) -> tuple[int, int] | None:
    """The events' time range inside the run's window [start, end); None when they miss it."""
    if span is None:
        return None
    low, high = max(span[0], run_window[0]), min(span[1], run_window[1] - 1)
    return (low, high) if low <= high else None


def build_shard(
    tables: Iterable[pa.Table],
    bounds: tuple[int, int] | None,
    gap_ms: int,
    window_ms: int,
    split_mode: str = "time",
    run_window: tuple[int, int] = NO_LIMIT,
) -> ShardOutput:
    """behaviors (one row per user) and examples (one row per impression) for a shard's users.

    `split_mode` "time" splits at the global time bounds; "last_per_user" (the DIN protocol for
    Amazon) makes each user's impressions at their latest timestamp test, those at the one before
    valid, and the rest train.

    `run_window` [start, end) in epoch ms (a backfill window): examples are the impressions inside
    it; history (behaviors, sessions, hist_end) is everything before `end`, whenever it began, so
    a window's examples equal those one run over all the logs gives for the same impressions, and
    the behaviors equal that run's as of `end`. Clicks up to `window_ms` after `end` still label
    the impressions before it; later events are counted as `after_window` and used for nothing.
    """
    events = concat([t for t in tables if t is not None], ENCODED)
    start_ms, end_ms = run_window
    horizon = end_ms + window_ms if end_ms < NO_LIMIT[1] else end_ms
    in_horizon = pc.less(events.column("ts"), horizon)
    after_window = events.num_rows - pc.sum(in_horizon).as_py() if events.num_rows else 0
    if after_window:
        events = events.filter(in_horizon)
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

    # History ends at the window's end; a user whose first event is later is not in this run.
    b = np.flatnonzero(positive & (ts < end_ms))
    known = ts[starts] < end_ms
    offsets = np.concatenate([[0], np.cumsum(np.bincount(gid[b], minlength=n_users)[known])])
    behaviors = pa.table(
        {
            "user": pa.array(user[starts][known]),
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
    inside = (ts[imp] >= start_ms) & (ts[imp] < end_ms)
    if not inside.all():
        imp, label = imp[inside], label[inside]
    split = np.zeros(len(imp), np.int8)
    if split_mode == "last_per_user":
        split = last_per_user_split(gid[imp], ts[imp], n_users)
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
        "events": n + int(after_window),  # accepted ones, whether the window uses them or not
        "after_window": int(after_window),
        "users": int(known.sum()),
        "behaviors": len(b),
        "sessions": int(brk.sum()),
        "examples": len(imp),
        "positives": int(label.sum()),
        **{f"examples_{name}": int((split == code).sum()) for code, name in enumerate(SPLITS)},
    }
    return ShardOutput(behaviors, examples, stats)
