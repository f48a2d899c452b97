"""Continuous candidate features (batch key `item_dense`): price and point-in-time item CTR statistics.

Training reads the ingest's items/ (price) and item_stats/ (daily snapshots of running impression
and click totals); serving reads the bundle's item table and the Feast item_stats view. Both turn
the raw numbers into model inputs with the same `dense_features`, so the two sides cannot drift.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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


def price_table(items: pa.Table, size: int = 0) -> np.ndarray:
    """Price by item index from an ITEMS table (item, price): (max(size, max index + 1),) float64,
    NaN for items without a row or with a null price."""
    index = items.column("item").to_numpy().astype(np.int64, copy=False)
    price = items.column("price").to_numpy(zero_copy_only=False)  # nulls become NaN
    out = np.full(max(size, int(index.max()) + 1 if len(index) else 0), np.nan)
    out[index] = np.asarray(price, dtype=np.float64)
    return out
