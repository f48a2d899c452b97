"""Online reads of behavior sequences from the Feast online store, decoded straight to numpy."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from feature_repo import (
    CATEGORY_SEQUENCE_FEATURES,
    ITEM_STATS_VIEW,
    USER_BEHAVIOR,
    USER_CATEGORY_BEHAVIOR,
    Behavior,
    decode_arrays,
    push_behaviors,
)
from feature_repo.bulk import entity_keys
from feature_repo.encoding import decode_int64_lists
from seqrank.schema import SEQUENCE_FEATURES
from training.dense import STATS_COLUMNS

log = logging.getLogger(__name__)

# The serving connection's memory map of the SQLite store (_SqliteReader); SQLite caps it at its
# compile-time limit.
_MMAP_BYTES = 1 << 31


class OnlineFeatures:
    """A warm Feast store over `feast_dir` (its feature_store.yaml) for per-request sequence reads.

    Feature views are resolved once from the registry. On the SQLite store, reads query Feast's
    own table (`<project>_<view>`, one row per key and feature) on a connection of their own, with
    the entity keys serialized for the whole request at once (feature_repo.bulk.entity_keys,
    Feast's v3 layout): Feast's `online_read` serializes each key in Python, ~14 µs a key, 1.4 ms
    of the ~100 (user, category) keys a SIM request reads. Other stores (Redis) go through the
    provider's `online_read`. Feast's generic `get_online_features` gives the same values but
    re-resolves feature references and builds Python lists per call, about twice the latency for
    one user and far more for a SIM request. tests/components/test_online_reads.py checks the two
    paths against each other and Feast's API.
    """

    def __init__(
        self,
        feast_dir: Path,
        read_delay_s: float = 0.0,
        on_read: Callable[[str, float], None] | None = None,
    ) -> None:
        """`read_delay_s` (fault drills, ServeConfig.fault_store_delay_ms) sleeps before every
        read, so the real store still answers, late; `on_read(view, seconds)` sees each read's
        latency (the service's store-read histogram)."""
        from feast import FeatureStore
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self.feast_dir = Path(feast_dir).resolve()
        if not (self.feast_dir / "feature_store.yaml").is_file():
            raise FileNotFoundError(f"no feature_store.yaml in {self.feast_dir}: run the features step first")
        self.store = FeatureStore(repo_path=str(self.feast_dir))
        self._provider = self.store.provider
        self._user_view = self.store.get_feature_view(USER_BEHAVIOR)
        self._category_view = self.store.get_feature_view(USER_CATEGORY_BEHAVIOR)
        self._item_stats_view: Any = None  # resolved on first use: only dense models read it
        self._entity_key = EntityKey
        self._value = Value
        # The SQLite online store shares one connection; the service calls in from worker threads.
        self._lock = threading.Lock()
        self._sqlite = _SqliteReader.of(self.store)
        self._read_delay_s = read_delay_s
        self._on_read = on_read
        log.info("online features from %s (project %s)", self.feast_dir, self.store.project)

    def _read(
        self, view: Any, ids: Mapping[str, Sequence[int]], features: list[str], lists: bool = False
    ) -> list[Any]:
        """Each entity's feature values ({feature: Value proto}, None when absent) under the lock,
        timed (and delayed in fault drills). `ids`: join key → (R,) ids, one entity per position.
        With `lists` (int64 list features) {feature: int64 array} instead, empty when absent."""
        started = time.perf_counter()
        if self._read_delay_s > 0:
            time.sleep(self._read_delay_s)
        rows: list[Any]
        with self._lock:
            if self._sqlite is not None and lists:
                rows = _int64_rows(self._sqlite.read_bytes(view, ids, features), features)
            elif self._sqlite is not None:
                rows = self._sqlite.read(view, ids, features)
            else:
                keys = [
                    self._key(**dict(zip(ids, entity, strict=True)))
                    for entity in zip(*ids.values(), strict=True)
                ]
                rows = [
                    values
                    for _, values in self._provider.online_read(self.store.config, view, keys, features)
                ]
                if lists:
                    rows = [decode_arrays(values, features) for values in rows]
        if self._on_read is not None:
            self._on_read(view.name, time.perf_counter() - started)
        return rows

    def version(self) -> float | None:
        """A value that changes when the online store's content does: the SQLite file's mtime;
        None for stores without one (Redis), which callers then re-read on every check."""
        online = self.store.config.online_store
        path = getattr(online, "path", None)
        if getattr(online, "type", None) != "sqlite" or not path:
            return None
        path = path if os.path.isabs(path) else os.path.join(self.feast_dir, path)
        try:
            return os.stat(path).st_mtime_ns / 1e9
        except OSError:
            return None

    def _key(self, **ids: int) -> Any:
        return self._entity_key(
            join_keys=list(ids), entity_values=[self._value(int64_val=int(v)) for v in ids.values()]
        )

    def user_sequence(self, user: int) -> dict[str, np.ndarray]:
        """The user's latest behaviors, oldest first: seq_item, seq_category, seq_ts as int64 arrays.

        Unknown users (and the PAD index 0) get empty arrays.
        """
        if user <= 0:
            return decode_arrays(None, SEQUENCE_FEATURES)
        [arrays] = self._read(self._user_view, {"user": [user]}, list(SEQUENCE_FEATURES), lists=True)
        return arrays

    def push(self, events: Iterable[Behavior | tuple[int, int, int, int]]) -> dict[str, int]:
        """Append new (user, item, category, ts) behaviors to the online sequences; next reads see them.

        Holds the read lock across the read-merge-write so concurrent requests neither read a
        half-written row nor lose each other's pushes.
        """
        return push_behaviors(self.store, events, lock=self._lock)

    def category_sequences(self, user: int, categories: Iterable[int]) -> dict[int, dict[str, np.ndarray]]:
        """SIM hard search: per category, the user's latest behaviors in it (cat_seq_item, cat_seq_ts).

        One read for all categories; a category the user never touched maps to empty arrays.
        """
        wanted = sorted({int(c) for c in categories})
        if not wanted:
            return {}
        if user <= 0:
            return {c: decode_arrays(None, CATEGORY_SEQUENCE_FEATURES) for c in wanted}
        ids = {"user": [user] * len(wanted), "category": wanted}
        rows = self._read(self._category_view, ids, list(CATEGORY_SEQUENCE_FEATURES), lists=True)
        return dict(zip(wanted, rows, strict=True))

    def item_stats(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """The latest item_stats row of each item: STATS_COLUMNS → (B,) int64 arrays in the order of
        `items` (item indices). Items without statistics, unknown items and PAD read 0, as training
        reads an item before its first snapshot. One online read for the distinct known items.
        """
        items = np.asarray(items, dtype=np.int64)
        out = {name: np.zeros(len(items), dtype=np.int64) for name in STATS_COLUMNS}
        wanted, inverse = np.unique(items, return_inverse=True)
        known = wanted > 0
        if not known.any():
            return out
        if self._item_stats_view is None:
            self._item_stats_view = self.store.get_feature_view(ITEM_STATS_VIEW)
        rows = self._read(self._item_stats_view, {"item": wanted[known].tolist()}, list(STATS_COLUMNS))
        per_item = {name: np.zeros(len(wanted), dtype=np.int64) for name in STATS_COLUMNS}
        for position, values in zip(np.flatnonzero(known), rows, strict=True):
            for name in STATS_COLUMNS:
                value = values.get(name) if values else None
                if value is not None:
                    per_item[name][position] = value.int64_val
        return {name: per_item[name][inverse] for name in STATS_COLUMNS}


def _int64_rows(rows: list[dict[str, bytes] | None], features: list[str]) -> list[dict[str, np.ndarray]]:
    """{feature: int64 array} per row of serialized int64-list Values, decoded in one pass
    (feature_repo.encoding.decode_int64_lists); a row or feature that is absent reads empty."""
    blobs = [(row.get(name) if row else None) or b"" for row in rows for name in features]
    arrays = iter(decode_int64_lists(blobs))
    return [{name: next(arrays) for name in features} for _ in rows]


class _SqliteReader:
    """Reads of Feast's SQLite online tables: one query per request, keys serialized at once."""

    def __init__(self, store: Any, path: Path) -> None:
        from feast.infra.online_stores.sqlite import _table_id
        from feast.protos.feast.types.Value_pb2 import Value

        # Its own connection: the features step writes in WAL mode, so reads see committed rows
        # while a writer is at work, and Feast's connection stays free for pushes.
        self.conn = sqlite3.connect(str(path), check_same_thread=False)
        # Pages read through a memory map instead of copied into a private page cache: a SIM
        # request's ~100 (user, category) rows lie on as many pages across the file, and the
        # copies were half of its read (0.62 → 0.27 ms at 500 users). The map is the OS's page
        # cache, shared by the --workers processes.
        self.conn.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
        self._config = store.config
        self._table_id = _table_id
        self._parse = Value.FromString

    @classmethod
    def of(cls, store: Any) -> _SqliteReader | None:
        """The reader of `store`'s online tables, or None when they are not plain SQLite tables."""
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        online = store.config.online_store
        if getattr(online, "type", None) != "sqlite" or getattr(online, "vector_enabled", False):
            return None
        path = Path(SqliteOnlineStore._get_db_path(store.config))
        if not path.is_absolute():
            path = Path(store.repo_path) / path
        return cls(store, path)

    def read(self, view: Any, ids: Mapping[str, Sequence[int]], features: list[str]) -> list[Any]:
        """Each entity's {feature: Value proto}, None when absent."""
        return [
            None if row is None else {name: self._parse(value) for name, value in row.items()}
            for row in self.read_bytes(view, ids, features)
        ]

    def read_bytes(
        self, view: Any, ids: Mapping[str, Sequence[int]], features: list[str]
    ) -> list[dict[str, bytes] | None]:
        """Each entity's {feature: serialized Value}, None when absent."""
        names = list(ids)
        keys = entity_keys(names, [np.asarray(ids[name], dtype=np.int64) for name in names])
        table = self._table_id(
            self._config.project, view, self._config.registry.enable_online_feature_view_versioning
        )
        wanted = set(features)
        found: dict[bytes, dict[str, bytes]] = {}
        # SQLite's default limit is 32,766 parameters; the item table reads 2,000 keys a chunk.
        for start in range(0, len(keys), 30_000):
            chunk = keys[start : start + 30_000]
            rows = self.conn.execute(
                f'SELECT entity_key, feature_name, value FROM "{table}" '
                f"WHERE entity_key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for key, feature, value in rows:
                if feature in wanted:
                    found.setdefault(key, {})[feature] = value
        return [found.get(key) for key in keys]


class ItemTable:
    """Every item's latest item_stats row, in process: STATS_COLUMNS → (n_items,) int64 by item index.

    A request's candidates are hundreds of items; reading their rows from the online store per
    request costs a protobuf decode per row (DESIGN §9: ~70 ms per 100 entities through Feast's
    generic path), while the table for the whole catalogue is a few arrays. `refresh` re-reads it
    when the store's `version` changes (or always, for stores without one); requests index it.
    """

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.columns: dict[str, np.ndarray] = {
            name: np.zeros(n_items, dtype=np.int64) for name in STATS_COLUMNS
        }
        self.version: float | None = None
        self.loaded = False

    def refresh(self, features: OnlineFeatures, chunk: int = 2_000) -> bool:
        """Re-read every item's row when the store changed since the last read; whether it did."""
        version = features.version()
        if self.loaded and version is not None and version == self.version:
            return False
        columns = {name: np.zeros(self.n_items, dtype=np.int64) for name in STATS_COLUMNS}
        for start in range(1, self.n_items, chunk):
            items = np.arange(start, min(start + chunk, self.n_items), dtype=np.int64)
            stats = features.item_stats(items)
            for name in STATS_COLUMNS:
                columns[name][items] = stats[name]
        self.columns, self.version, self.loaded = columns, version, True  # swapped whole
        log.info("item table: %d items from the online store (version %s)", self.n_items, version)
        return True

    def stats(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """STATS_COLUMNS → (B,) for item indices `items`; 0 for PAD and items past the table."""
        columns = self.columns
        inside = (items > 0) & (items < self.n_items)
        index = np.where(inside, items, 0)
        return {name: np.where(inside, values[index], 0) for name, values in columns.items()}

    def popularity(self, items: np.ndarray) -> np.ndarray:
        """Clicks per item (B,) float64, the degraded ranking's score; 0 where unknown."""
        return self.stats(items)["clicks_total"].astype(np.float64)
