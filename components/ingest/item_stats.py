"""Item statistics: impressions and clicks per (item, UTC day), and point-in-time daily snapshots."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from components.ingest.arrow_utils import concat
from components.ingest.shards import CLICK
from seqrank.schema import ITEM_STATS

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
    counts = concat(parts, ITEM_DAYS)
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
