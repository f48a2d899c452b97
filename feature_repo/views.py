"""Declarative Feast definitions: entities, feature views over the features step's tables, services.

Feast bakes a `FileSource`'s path into the registry, so the objects are built by `definitions()` for
a given data directory instead of living at module level as in Feast's templates.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from feast import Entity, FeatureService, FeatureView, Field, FileSource, Project, ValueType
from feast.types import Array, Float64, Int32, Int64, String

from seqrank.config import FeatureConfig
from seqrank.schema import SEQUENCE_FEATURES

# Feature view names; also the Parquet table names under the data directory.
USER_BEHAVIOR = "user_behavior"
USER_CATEGORY_BEHAVIOR = "user_category_behavior"
ITEM_PROFILE = "item_profile"
USER_PROFILE = "user_profile"
VIEWS = (USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR, ITEM_PROFILE, USER_PROFILE)

TIMESTAMP_FIELD = "event_timestamp"
# Features of user_category_behavior; prefixed so a service holding both sequence views has no clash.
CATEGORY_SEQUENCE_FEATURES = ("cat_seq_item", "cat_seq_ts")

# Feature tables as the features step writes them; every table has `event_timestamp`.
_TS = pa.field(TIMESTAMP_FIELD, pa.timestamp("us", tz="UTC"), nullable=False)
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    USER_BEHAVIOR: pa.schema(
        [pa.field("user", pa.int64(), nullable=False)]
        + [pa.field(name, dtype, nullable=False) for name, dtype in SEQUENCE_FEATURES.items()]
        + [_TS]
    ),
    USER_CATEGORY_BEHAVIOR: pa.schema(
        [
            pa.field("user", pa.int64(), nullable=False),
            pa.field("category", pa.int64(), nullable=False),
            pa.field("cat_seq_item", pa.list_(pa.int64()), nullable=False),
            pa.field("cat_seq_ts", pa.list_(pa.int64()), nullable=False),
            _TS,
        ]
    ),
    ITEM_PROFILE: pa.schema(
        [
            pa.field("item", pa.int64(), nullable=False),
            pa.field("category", pa.int64(), nullable=False),
            pa.field("brand", pa.int64(), nullable=False),
            pa.field("price", pa.float64()),
            _TS,
        ]
    ),
    USER_PROFILE: pa.schema(
        [
            pa.field("user", pa.int64(), nullable=False),
            pa.field("age_bucket", pa.int32()),
            pa.field("gender", pa.string()),
            _TS,
        ]
    ),
}

# Model family -> feature views its versioned FeatureService serves. Bump the suffix when the
# feature list of a family changes, so a deployed model keeps reading the features it was trained on.
SERVICES: dict[str, tuple[str, ...]] = {
    "din_v1": (USER_BEHAVIOR, ITEM_PROFILE, USER_PROFILE),
    "emb_mlp_v1": (USER_BEHAVIOR, ITEM_PROFILE, USER_PROFILE),
    "sim_v1": (USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR, ITEM_PROFILE, USER_PROFILE),
}


def table_path(data_dir: Path, view: str) -> Path:
    """The Parquet file behind feature view `view`."""
    return Path(data_dir) / f"{view}.parquet"


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
    # No TTL: a sequence stays current until the user's next behavior replaces it.
    user_behavior = FeatureView(
        name=USER_BEHAVIOR,
        entities=[user],
        ttl=timedelta(0),
        schema=[Field(name="user", dtype=Int64)]
        + [Field(name=name, dtype=Array(Int64)) for name in SEQUENCE_FEATURES],
        source=_source(data_dir, USER_BEHAVIOR),
        online=True,
        description=f"latest up to {cfg.max_sequence_length} behaviors: item, category, ts (epoch ms)",
    )

    # SIM hard search: per (user, category) the latest behaviors in that category, so a long-term
    # history can be cut to the candidate's category with one key lookup.
    user_category_behavior = FeatureView(
        name=USER_CATEGORY_BEHAVIOR,
        entities=[user, category],
        ttl=timedelta(0),
        schema=[
            Field(name="user", dtype=Int64),
            Field(name="category", dtype=Int64),
            Field(name="cat_seq_item", dtype=Array(Int64)),
            Field(name="cat_seq_ts", dtype=Array(Int64)),
        ],
        source=_source(data_dir, USER_CATEGORY_BEHAVIOR),
        online=True,
        description=f"latest up to {cfg.category_k} behaviors per (user, category)",
    )

    # Static item attributes; stamped at the epoch so they are valid at every training timestamp.
    item_profile = FeatureView(
        name=ITEM_PROFILE,
        entities=[item],
        ttl=timedelta(0),
        schema=[
            Field(name="item", dtype=Int64),
            Field(name="category", dtype=Int64),
            Field(name="brand", dtype=Int64),
            Field(name="price", dtype=Float64),
        ],
        source=_source(data_dir, ITEM_PROFILE),
        online=True,
        description="item category, brand and price",
    )

    # Static user attributes, stamped at the epoch like the item profile.
    user_profile = FeatureView(
        name=USER_PROFILE,
        entities=[user],
        ttl=timedelta(0),
        schema=[
            Field(name="user", dtype=Int64),
            Field(name="age_bucket", dtype=Int32),
            Field(name="gender", dtype=String),
        ],
        source=_source(data_dir, USER_PROFILE),
        online=True,
        description="user demographics",
    )

    views = {v.name: v for v in (user_behavior, user_category_behavior, item_profile, user_profile)}
    # One versioned service per model family: the contract between a trained model and serving.
    services = [
        FeatureService(name=name, features=[views[v] for v in members], description=f"features of {name}")
        for name, members in SERVICES.items()
    ]
    return [project, user, item, category, *views.values(), *services]
