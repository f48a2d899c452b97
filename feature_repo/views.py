"""Declarative Feast definitions: entities, feature views over the features step's tables, services.

Feast bakes a `FileSource`'s path into the registry, so the objects are built by `definitions()` for
a given data directory instead of living at module level as in Feast's templates.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from feast import Entity, FeatureService, FeatureView, Field, FileSource, Project, PushSource, ValueType
from feast.types import Array, FeastType, Float32, Float64, Int32, Int64, String

from feature_repo.contracts import (
    ITEM_PROFILE,
    ITEM_STATS_VIEW,
    MAX_LENGTH_TAG,
    SERVICES,
    TABLE_SCHEMAS,
    TIMESTAMP_FIELD,
    USER_BEHAVIOR,
    USER_BEHAVIOR_PUSH,
    USER_CATEGORY_BEHAVIOR,
    USER_CATEGORY_BEHAVIOR_PUSH,
    USER_PROFILE,
    table_path,
)
from seqrank.config import FeatureConfig

# Arrow type of a table column -> Feast type of the view field; a contract type missing here fails
# at definition time instead of being stored as something else.
_FEAST_TYPES: dict[pa.DataType, FeastType] = {
    pa.int64(): Int64,
    pa.int32(): Int32,
    pa.float64(): Float64,
    pa.float32(): Float32,
    pa.string(): String,
    pa.list_(pa.int64()): Array(Int64),
}


def feast_type(dtype: pa.DataType) -> FeastType:
    """The Feast type a feature view uses for a table column of Arrow type `dtype`."""
    try:
        return _FEAST_TYPES[dtype]
    except KeyError:
        raise TypeError(f"no Feast type for Arrow type {dtype}; add it to _FEAST_TYPES") from None


def view_fields(view: str) -> list[Field]:
    """Schema of feature view `view`: every column of its table but the event timestamp."""
    return [
        Field(name=f.name, dtype=feast_type(f.type)) for f in TABLE_SCHEMAS[view] if f.name != TIMESTAMP_FIELD
    ]


def _source(data_dir: Path, view: str) -> FileSource:
    return FileSource(
        name=f"{view}_source",
        path=str(table_path(data_dir, view).resolve()),
        timestamp_field=TIMESTAMP_FIELD,
    )


def definitions(data_dir: Path, cfg: FeatureConfig) -> list:
    """Every Feast object of the seqrank repo, with sources reading the tables under `data_dir`."""
    # The project namespaces registry entries and online tables, so several repos can share a store.
    project = Project(name=cfg.project, description="seqrank: sequence-aware CTR ranking features")

    # A user, keyed by the dense vocab index ingest assigned (0 = unknown, never stored).
    user = Entity(name="user", join_keys=["user"], value_type=ValueType.INT64, description="user index")
    # An item, keyed by its dense vocab index.
    item = Entity(name="item", join_keys=["item"], value_type=ValueType.INT64, description="item index")
    # A category; only used paired with `user`, as the key of the SIM hard-search index.
    category = Entity(
        name="category", join_keys=["category"], value_type=ValueType.INT64, description="category index"
    )

    # The user's latest long behavior sequence, oldest first; one row per user, stamped with the
    # time of the last behavior so a point-in-time join never sees behaviors from the future.
    # No TTL: a sequence stays current until the user's next behavior replaces it. Fed in bulk from
    # its table and, between runs, by pushes of new behaviors.
    user_behavior = FeatureView(
        name=USER_BEHAVIOR,
        entities=[user],
        ttl=timedelta(0),
        schema=view_fields(USER_BEHAVIOR),
        source=PushSource(name=USER_BEHAVIOR_PUSH, batch_source=_source(data_dir, USER_BEHAVIOR)),
        online=True,
        tags={MAX_LENGTH_TAG: str(cfg.max_sequence_length)},
        description=f"latest up to {cfg.max_sequence_length} behaviors: item, category, ts (epoch ms)",
    )

    # SIM hard search: per (user, category) the latest behaviors in that category, so a long-term
    # history can be cut to the candidate's category with one key lookup; pushed like the above.
    user_category_behavior = FeatureView(
        name=USER_CATEGORY_BEHAVIOR,
        entities=[user, category],
        ttl=timedelta(0),
        schema=view_fields(USER_CATEGORY_BEHAVIOR),
        source=PushSource(
            name=USER_CATEGORY_BEHAVIOR_PUSH, batch_source=_source(data_dir, USER_CATEGORY_BEHAVIOR)
        ),
        online=True,
        tags={MAX_LENGTH_TAG: str(cfg.category_k)},
        description=f"latest up to {cfg.category_k} behaviors per (user, category)",
    )

    # Static item attributes; stamped at the epoch so they are valid at every training timestamp.
    item_profile = FeatureView(
        name=ITEM_PROFILE,
        entities=[item],
        ttl=timedelta(0),
        schema=view_fields(ITEM_PROFILE),
        source=_source(data_dir, ITEM_PROFILE),
        online=True,
        description="item category, brand and price",
    )

    # Static user attributes, stamped at the epoch like the item profile.
    user_profile = FeatureView(
        name=USER_PROFILE,
        entities=[user],
        ttl=timedelta(0),
        schema=view_fields(USER_PROFILE),
        source=_source(data_dir, USER_PROFILE),
        online=True,
        description="user demographics",
    )

    # Point-in-time item statistics: one row per (item, day), stamped at the end of the day, so a
    # training example joins the newest snapshot at or before its own time and never a later one.
    # No TTL: an item's lifetime totals stay valid however long ago it was last shown.
    item_stats = FeatureView(
        name=ITEM_STATS_VIEW,
        entities=[item],
        ttl=timedelta(0),
        schema=view_fields(ITEM_STATS_VIEW),
        source=_source(data_dir, ITEM_STATS_VIEW),
        online=True,
        description="daily impressions and clicks of the item, running totals and lifetime CTR",
    )

    views = {
        v.name: v for v in (user_behavior, user_category_behavior, item_profile, user_profile, item_stats)
    }
    # One versioned service per model family: the contract between a trained model and serving.
    services = [
        FeatureService(name=name, features=[views[v] for v in members], description=f"features of {name}")
        for name, members in SERVICES.items()
    ]
    return [project, user, item, category, *views.values(), *services]
