"""Push new behaviors into the online sequence views (the rows of their Feast push sources).

A pushed behavior is merged into what the online store already holds for its user and its
(user, category) pair: appended in time order and cut to the cap the view was built with, then
written back in Feast's layout (feature_repo.bulk), so the next lookup sees it. Used by the features step's CLI
and importable by the ranking service (it depends on `feature_repo`, never on `components`).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa

from feature_repo.bulk import PUSHED, open_bulk
from feature_repo.contracts import (
    CATEGORY_SEQUENCE_FEATURES,
    MAX_LENGTH_TAG,
    TABLE_SCHEMAS,
    TIMESTAMP_FIELD,
    USER_BEHAVIOR,
    USER_CATEGORY_BEHAVIOR,
)
from feature_repo.encoding import batch_rows
from seqrank.schema import PAD, SEQUENCE_FEATURES

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

log = logging.getLogger(__name__)


class Behavior(NamedTuple):
    """One new positive behavior, in dense vocab indices; `ts` in epoch ms."""

    user: int
    item: int
    category: int
    ts: int


def decode_arrays(values: Mapping[str, Any] | None, names: Iterable[str]) -> dict[str, np.ndarray]:
    """int64 arrays from the protobuf values an online read returns; empty when the key is absent."""
    out = {}
    for name in names:
        value = values.get(name) if values else None
        field = value.int64_list_val.val if value is not None else ()
        out[name] = np.fromiter(field, dtype=np.int64, count=len(field))
    return out


def entity_key(**ids: int) -> Any:
    """The Feast online-store key of an entity (or entity pair) given as join key → dense index."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=list(ids), entity_values=[Value(int64_val=int(v)) for v in ids.values()])


def _cap(view: FeatureView) -> int:
    try:
        return int(view.tags[MAX_LENGTH_TAG])
    except (KeyError, ValueError):
        raise ValueError(
            f"feature view {view.name} has no integer {MAX_LENGTH_TAG!r} tag: re-run the features step"
        ) from None


def _merge(
    current: dict[str, np.ndarray], new: dict[str, np.ndarray], ts_name: str, cap: int
) -> dict[str, np.ndarray]:
    """`current` plus `new`, stably ordered by time (held behaviors first on ties), last `cap` kept."""
    merged = {name: np.concatenate((current[name], new[name])) for name in current}
    order = np.argsort(merged[ts_name], kind="stable")[-cap:]
    return {name: values[order] for name, values in merged.items()}


def ms_to_datetime(ts_ms: int) -> datetime:
    """The UTC datetime of an epoch-ms time, exact to the millisecond."""
    # Integer arithmetic: a float of epoch seconds would round some milliseconds by a microsecond.
    return datetime.fromtimestamp(ts_ms // 1000, tz=UTC) + timedelta(milliseconds=ts_ms % 1000)


def push_behaviors(
    store: FeatureStore,
    events: Iterable[Behavior | tuple[int, int, int, int]],
    lock: contextlib.AbstractContextManager[Any] | None = None,
) -> dict[str, int]:
    """Merge `events` into the online `user_behavior` and `user_category_behavior` rows and push them.

    Args:
        store: a FeatureStore over an applied seqrank repo.
        events: (user, item, category, ts) tuples; any order, any number of users.
        lock: held across the read-merge-write, so concurrent pushes in one process cannot lose
            each other's behaviors (pass the lock that guards the store's reads, if any).

    Returns:
        rows pushed per view.

    Not idempotent: pushing the same behavior twice stores it twice, like a repeated log line.
    Writers in different processes need one writer per user (e.g. a stream partitioned by user).
    """

    batch = [Behavior(*map(int, e)) for e in events]
    bad = [e for e in batch if e.user <= PAD]
    if bad:
        raise ValueError(
            f"behaviors for user index {bad[0].user}: users must be > {PAD} (0 is unknown/padding)"
        )
    if not batch:
        return {USER_BEHAVIOR: 0, USER_CATEGORY_BEHAVIOR: 0}

    by_user: dict[int, list[Behavior]] = defaultdict(list)
    by_pair: dict[tuple[int, int], list[Behavior]] = defaultdict(list)
    for event in batch:
        by_user[event.user].append(event)
        by_pair[(event.user, event.category)].append(event)

    user_view = store.get_feature_view(USER_BEHAVIOR)
    pair_view = store.get_feature_view(USER_CATEGORY_BEHAVIOR)
    seq_item, seq_category, seq_ts = SEQUENCE_FEATURES
    cat_item, cat_ts = CATEGORY_SEQUENCE_FEATURES

    with lock if lock is not None else contextlib.nullcontext():
        users = sorted(by_user)
        held = store.provider.online_read(
            store.config, user_view, [entity_key(user=u) for u in users], list(SEQUENCE_FEATURES)
        )
        user_rows = []
        for user, (_, values) in zip(users, held, strict=True):
            new = {
                seq_item: np.array([e.item for e in by_user[user]], dtype=np.int64),
                seq_category: np.array([e.category for e in by_user[user]], dtype=np.int64),
                seq_ts: np.array([e.ts for e in by_user[user]], dtype=np.int64),
            }
            merged = _merge(decode_arrays(values, SEQUENCE_FEATURES), new, seq_ts, _cap(user_view))
            user_rows.append(_row({"user": user}, merged, seq_ts))

        pairs = sorted(by_pair)
        held = store.provider.online_read(
            store.config,
            pair_view,
            [entity_key(user=u, category=c) for u, c in pairs],
            list(CATEGORY_SEQUENCE_FEATURES),
        )
        pair_rows = []
        for (user, category), (_, values) in zip(pairs, held, strict=True):
            new = {
                cat_item: np.array([e.item for e in by_pair[(user, category)]], dtype=np.int64),
                cat_ts: np.array([e.ts for e in by_pair[(user, category)]], dtype=np.int64),
            }
            merged = _merge(decode_arrays(values, CATEGORY_SEQUENCE_FEATURES), new, cat_ts, _cap(pair_view))
            pair_rows.append(_row({"user": user, "category": category}, merged, cat_ts))

        # Written in bulk, not through `store.push`: Feast's Redis write drops a row whose event
        # time is not newer than the stored one, which a late behavior's merged row is (its stamp
        # stays the newest held). The next run rewrites them from its offline data, so offline and
        # online agree again: on SQLite their content differs from the offline rows', and Redis's
        # holdings mark them PUSHED.
        bulk = open_bulk(store)
        for view, rows in ((USER_BEHAVIOR, user_rows), (USER_CATEGORY_BEHAVIOR, pair_rows)):
            encoded = batch_rows(view, pa.RecordBatch.from_pylist(rows, schema=TABLE_SCHEMAS[view]))
            bulk.write(view, encoded, hold=False)
            bulk.hold(view, encoded.keys, PUSHED)
    log.debug("pushed %d behaviors: %d users, %d (user, category) pairs", len(batch), len(users), len(pairs))
    return {USER_BEHAVIOR: len(user_rows), USER_CATEGORY_BEHAVIOR: len(pair_rows)}


def _row(keys: dict[str, int], merged: dict[str, np.ndarray], ts_name: str) -> dict[str, Any]:
    # Stamped with the newest behavior, as materialization stamps a sequence row.
    return {
        **keys,
        **{name: values.tolist() for name, values in merged.items()},
        TIMESTAMP_FIELD: ms_to_datetime(int(merged[ts_name][-1])),
    }
