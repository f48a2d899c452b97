"""Continuous candidate features (batch key `item_dense`): price and point-in-time item CTR statistics.

Training reads the ingest's items/ (price) and item_stats/ (daily snapshots of running impression
and click totals); serving reads the bundle's item table and the Feast item_stats view. Both turn
the raw numbers into model inputs with the same `dense_features`, so the two sides cannot drift.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seqrank.schema import ITEM_STATS, ITEMS, check_schema

log = logging.getLogger(__name__)

# Columns of `item_dense`, in order (B, len(DENSE_FEATURES)).
DENSE_FEATURES = ("log_price", "price_known", "smoothed_ctr", "log_impressions")
# Smoothed CTR = (clicks + PRIOR_CTR · PRIOR_IMPRESSIONS) / (impressions + PRIOR_IMPRESSIONS): a
# new item starts at the prior and its own rate takes over as impressions accumulate, instead of
# the 0/1 rates a handful of impressions would give. The prior is a constant (not fitted) so the
# server computes exactly what training did without extra state.
PRIOR_CTR, PRIOR_IMPRESSIONS = 0.05, 20.0
# The item statistics `dense_features` reads: ITEM_STATS columns, also fields of the Feast
# item_stats view, which serving reads online.
STATS_COLUMNS = ("impressions_total", "clicks_total")


def dense_features(price: np.ndarray, impressions: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    """`item_dense` rows from raw values: (B,) price (NaN = unknown), running impression and click
    totals (0 before the item's first snapshot) → (B, len(DENSE_FEATURES)) float32.

    log_price = log(1 + price), 0 when unknown, with price_known ∈ {0, 1} beside it, so a missing
    price is not read as a free item; smoothed_ctr as above; log_impressions = log(1 + impressions).
    """
    price = np.asarray(price, dtype=np.float64)
    impressions = np.asarray(impressions, dtype=np.float64)
    clicks = np.asarray(clicks, dtype=np.float64)
    known = np.isfinite(price)
    out = np.empty((len(price), len(DENSE_FEATURES)), dtype=np.float32)
    out[:, 0] = np.log1p(np.where(known, np.maximum(price, 0.0), 0.0))
    out[:, 1] = known
    out[:, 2] = (clicks + PRIOR_CTR * PRIOR_IMPRESSIONS) / (impressions + PRIOR_IMPRESSIONS)
    out[:, 3] = np.log1p(np.maximum(impressions, 0.0))
    return out


class ItemDense:
    """Item prices and statistics snapshots in memory, with a vectorized point-in-time lookup.

    Args:
        price: (I,) float64 price by item index; NaN where unknown. Items past I are unknown.
        stats: an ITEM_STATS table (item, ts, ..., impressions_total, clicks_total), any order.

    A snapshot stamped `ts` counts events strictly before `ts` (seqrank.schema.ITEM_STATS), so
    an impression at time t may read the latest snapshot with ts <= t — Feast's point-in-time
    rule — and never a later one.
    """

    def __init__(self, price: np.ndarray, stats: pa.Table | None = None) -> None:
        self.price = np.asarray(price, dtype=np.float64)
        if stats is None:
            stats = ITEM_STATS.empty_table()
        stats = stats.sort_by([("item", "ascending"), ("ts", "ascending")])
        self.stats_item = stats.column("item").to_numpy().astype(np.int64, copy=False)
        self.stats_ts = stats.column("ts").to_numpy().astype(np.int64, copy=False)
        self.impressions = stats.column("impressions_total").to_numpy().astype(np.int64, copy=False)
        self.clicks = stats.column("clicks_total").to_numpy().astype(np.int64, copy=False)
        # Epoch-ms stamps times item indices would overflow int64, so snapshots are keyed by
        # item · (T + 1) + (rank of their ts among the T distinct stamps, 1-based).
        self._stamps = np.unique(self.stats_ts)
        self._stride = len(self._stamps) + 1
        self._keys = self.stats_item * self._stride + np.searchsorted(self._stamps, self.stats_ts) + 1

    def statistics(self, items: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(impressions_total, clicks_total) of each item's latest snapshot with ts <= the given
        ts, zeros when it has none: (B,), (B,) → (B,) int64 each."""
        items = np.asarray(items, dtype=np.int64)
        if not len(self._keys):
            return np.zeros(len(items), np.int64), np.zeros(len(items), np.int64)
        # Distinct stamps <= ts: a snapshot of the same item qualifies iff its rank is <= this.
        rank = np.searchsorted(self._stamps, np.asarray(ts, dtype=np.int64), side="right")
        found = np.searchsorted(self._keys, items * self._stride + rank, side="right") - 1
        safe = np.maximum(found, 0)
        hit = (found >= 0) & (self.stats_item[safe] == items)
        return np.where(hit, self.impressions[safe], 0), np.where(hit, self.clicks[safe], 0)

    def prices(self, items: np.ndarray) -> np.ndarray:
        """Price of each item (B,) float64, NaN when unknown."""
        items = np.asarray(items, dtype=np.int64)
        inside = (items >= 0) & (items < len(self.price))
        return np.where(inside, self.price[np.where(inside, items, 0)], np.nan)

    def features(self, items: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """`item_dense` of candidates `items` shown at `ts`: (B,), (B,) → (B, F) float32."""
        impressions, clicks = self.statistics(items, ts)
        return dense_features(self.prices(items), impressions, clicks)


def price_table(items: pa.Table, size: int = 0) -> np.ndarray:
    """Price by item index from an ITEMS table (item, price): (max(size, max index + 1),) float64,
    NaN for items without a row or with a null price."""
    index = items.column("item").to_numpy().astype(np.int64, copy=False)
    price = items.column("price").to_numpy(zero_copy_only=False)  # nulls become NaN
    out = np.full(max(size, int(index.max()) + 1 if len(index) else 0), np.nan)
    out[index] = np.asarray(price, dtype=np.float64)
    return out


def load_item_dense(path: Path | str, num_items: int = 0) -> ItemDense:
    """Read items/ and item_stats/ of an ingest output directory; either may be absent (an older
    ingest, or a data set without prices), and then reads as unknown prices / no snapshots."""
    path = Path(path)
    items_dir, stats_dir = path / "items", path / "item_stats"
    if items_dir.exists():
        items = pq.read_table(items_dir, columns=["item", "price"])
        check_schema(items, pa.schema([ITEMS.field("item"), ITEMS.field("price")]), str(items_dir))
        price = price_table(items, num_items)
    else:
        log.warning("no %s: item_dense holds unknown prices", items_dir)
        price = np.full(num_items, np.nan)
    stats = None
    if stats_dir.exists():
        stats = pq.read_table(stats_dir, columns=ITEM_STATS.names)
        check_schema(stats, ITEM_STATS, str(stats_dir))
        stats = stats.cast(ITEM_STATS)
    else:
        log.warning("no %s: item_dense holds no CTR statistics", stats_dir)
    return ItemDense(price, stats)
