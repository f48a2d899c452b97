"""The feature repo's contracts without Feast: view names, the feature tables' schemas, join keys,
the services' views and where each table lives. Steps that only name views (deploy, serving's
reads) import this, not Feast (`import feast` is several seconds).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from seqrank.schema import ITEM_STATS, ITEMS, SEQUENCE_FEATURES, USERS

# Feature view names; also the Parquet table names under the data directory.
USER_BEHAVIOR = "user_behavior"
USER_CATEGORY_BEHAVIOR = "user_category_behavior"
ITEM_PROFILE = "item_profile"
USER_PROFILE = "user_profile"
ITEM_STATS_VIEW = "item_stats"
VIEWS = (USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR, ITEM_PROFILE, USER_PROFILE, ITEM_STATS_VIEW)

TIMESTAMP_FIELD = "event_timestamp"
# Features of user_category_behavior: the item and ts columns of a sequence, typed as in
# SEQUENCE_FEATURES, prefixed so a service holding both sequence views has no name clash.
CATEGORY_SEQUENCE_FEATURES: dict[str, pa.DataType] = {
    "cat_seq_item": SEQUENCE_FEATURES["seq_item"],
    "cat_seq_ts": SEQUENCE_FEATURES["seq_ts"],
}
# Derived item statistic: lifetime click-through rate, 0 before the first impression.
ITEM_CTR_FEATURE = "ctr_total"

# Push sources: new behaviors reach the online sequence views through these (see feature_repo.push).
USER_BEHAVIOR_PUSH = f"{USER_BEHAVIOR}_push"
USER_CATEGORY_BEHAVIOR_PUSH = f"{USER_CATEGORY_BEHAVIOR}_push"
# View tags holding the sequence caps the tables were built with, so a push anywhere trims the
# same way materialization did without needing the pipeline config.
MAX_LENGTH_TAG = "max_length"

# Feature tables as the features step writes them, derived from the contracts in seqrank.schema so
# ingest, training and the store share one definition; every table has `event_timestamp`.
_TS = pa.field(TIMESTAMP_FIELD, pa.timestamp("us", tz="UTC"), nullable=False)
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    USER_BEHAVIOR: pa.schema(
        [pa.field("user", pa.int64(), nullable=False)]
        + [pa.field(name, dtype, nullable=False) for name, dtype in SEQUENCE_FEATURES.items()]
        + [_TS]
    ),
    USER_CATEGORY_BEHAVIOR: pa.schema(
        [pa.field("user", pa.int64(), nullable=False), pa.field("category", pa.int64(), nullable=False)]
        + [pa.field(name, dtype, nullable=False) for name, dtype in CATEGORY_SEQUENCE_FEATURES.items()]
        + [_TS]
    ),
    ITEM_PROFILE: pa.schema([*ITEMS, _TS]),
    USER_PROFILE: pa.schema([*USERS, _TS]),
    # ITEM_STATS' `ts` (end of the snapshot's day) becomes the event timestamp.
    ITEM_STATS_VIEW: pa.schema(
        [f for f in ITEM_STATS if f.name != "ts"]
        + [pa.field(ITEM_CTR_FEATURE, pa.float64(), nullable=False), _TS]
    ),
}

# Join keys of each view's entity (or entity pair), as its table holds them.
JOIN_KEYS: dict[str, tuple[str, ...]] = {
    USER_BEHAVIOR: ("user",),
    USER_CATEGORY_BEHAVIOR: ("user", "category"),
    ITEM_PROFILE: ("item",),
    USER_PROFILE: ("user",),
    ITEM_STATS_VIEW: ("item",),
}


def feature_names(view: str) -> list[str]:
    """The features of view `view` as Feast stores them online: its table's columns but keys and time."""
    skip = {*JOIN_KEYS[view], TIMESTAMP_FIELD}
    return [f.name for f in TABLE_SCHEMAS[view] if f.name not in skip]


# Model family -> feature views its versioned FeatureService serves. Bump the suffix when the
# feature list of a family changes, so a deployed model keeps reading the features it was trained
# on: v1 is the set the first models were trained with, v2 adds the point-in-time item statistics.
SERVICES: dict[str, tuple[str, ...]] = {
    "din_v1": (USER_BEHAVIOR, ITEM_PROFILE, USER_PROFILE),
    "emb_mlp_v1": (USER_BEHAVIOR, ITEM_PROFILE, USER_PROFILE),
    "sim_v1": (USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR, ITEM_PROFILE, USER_PROFILE),
    "din_v2": (USER_BEHAVIOR, ITEM_PROFILE, USER_PROFILE, ITEM_STATS_VIEW),
    "emb_mlp_v2": (USER_BEHAVIOR, ITEM_PROFILE, USER_PROFILE, ITEM_STATS_VIEW),
    "sim_v2": (USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR, ITEM_PROFILE, USER_PROFILE, ITEM_STATS_VIEW),
}


def table_path(data_dir: Path, view: str) -> Path:
    """The Parquet file behind feature view `view`."""
    return Path(data_dir) / f"{view}.parquet"
