"""Train/valid/test splits: the events' time range, time-split bounds, the last-per-user split."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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


SPLIT_MODES = ("time", "last_per_user")


def last_per_user_split(gid: np.ndarray, ts: np.ndarray, n_users: int) -> np.ndarray:
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
