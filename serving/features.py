"""Online reads of behavior sequences from the Feast online store, decoded straight to numpy."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
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
from seqrank.schema import SEQUENCE_FEATURES
from training.dense import STATS_COLUMNS

log = logging.getLogger(__name__)


class OnlineFeatures:
    """A warm Feast store over `feast_dir` (its feature_store.yaml) for per-request sequence reads.

    Reads go through the store's provider (`online_read`) with the feature view resolved once from
    the registry. Feast's generic `get_online_features` gives the same values but re-resolves
    feature references and builds Python lists per call, about twice the latency for one user and
    far more for the tens of (user, category) keys a SIM request needs.
    """

    def __init__(self, feast_dir: Path) -> None:
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
        log.info("online features from %s (project %s)", self.feast_dir, self.store.project)

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
        with self._lock:
            [(_, values)] = self._provider.online_read(
                self.store.config, self._user_view, [self._key(user=user)], list(SEQUENCE_FEATURES)
            )
        return decode_arrays(values, SEQUENCE_FEATURES)

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
        keys = [self._key(user=user, category=c) for c in wanted]
        with self._lock:
            rows = self._provider.online_read(
                self.store.config, self._category_view, keys, list(CATEGORY_SEQUENCE_FEATURES)
            )
        return {
            c: decode_arrays(values, CATEGORY_SEQUENCE_FEATURES)
            for c, (_, values) in zip(wanted, rows, strict=True)
        }

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
        keys = [self._key(item=int(i)) for i in wanted[known]]
        with self._lock:
            rows = self._provider.online_read(
                self.store.config, self._item_stats_view, keys, list(STATS_COLUMNS)
            )
        per_item = {name: np.zeros(len(wanted), dtype=np.int64) for name in STATS_COLUMNS}
        for position, (_, values) in zip(np.flatnonzero(known), rows, strict=True):
            for name in STATS_COLUMNS:
                value = values.get(name) if values else None
                if value is not None:
                    per_item[name][position] = value.int64_val
        return {name: per_item[name][inverse] for name in STATS_COLUMNS}
