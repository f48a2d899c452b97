"""The seqrank Feast repo: declarative entities, feature views and services, and the store config."""

from feature_repo.store_config import CLUSTER_YAML, STORE_YAML, store_config, write_store_config
from feature_repo.views import (
    CATEGORY_SEQUENCE_FEATURES,
    ITEM_PROFILE,
    SERVICES,
    TABLE_SCHEMAS,
    TIMESTAMP_FIELD,
    USER_BEHAVIOR,
    USER_CATEGORY_BEHAVIOR,
    USER_PROFILE,
    VIEWS,
    definitions,
    table_path,
)

__all__ = [
    "CATEGORY_SEQUENCE_FEATURES",
    "CLUSTER_YAML",
    "ITEM_PROFILE",
    "SERVICES",
    "STORE_YAML",
    "TABLE_SCHEMAS",
    "TIMESTAMP_FIELD",
    "USER_BEHAVIOR",
    "USER_CATEGORY_BEHAVIOR",
    "USER_PROFILE",
    "VIEWS",
    "definitions",
    "store_config",
    "table_path",
    "write_store_config",
]
