"""The seqrank Feast repo: declarative entities, feature views and services, and the store config.

The names that need Feast (the view objects, push) are imported from their module on first use
(PEP 562), so a step that only needs the view names or the store config (deploy, rollback) does
not import Feast, several seconds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from feature_repo.contracts import (
    CATEGORY_SEQUENCE_FEATURES,
    ITEM_CTR_FEATURE,
    ITEM_PROFILE,
    ITEM_STATS_VIEW,
    JOIN_KEYS,
    MAX_LENGTH_TAG,
    SERVICES,
    TABLE_SCHEMAS,
    TIMESTAMP_FIELD,
    USER_BEHAVIOR,
    USER_BEHAVIOR_PUSH,
    USER_CATEGORY_BEHAVIOR,
    USER_CATEGORY_BEHAVIOR_PUSH,
    USER_PROFILE,
    VIEWS,
    feature_names,
    table_path,
)
from feature_repo.store_config import STORE_YAML, store_config, write_store_config

# Name -> the module that defines it, imported when the name is first read.
_NEED_FEAST = {
    **dict.fromkeys(("definitions", "feast_type", "view_fields"), "views"),
    **dict.fromkeys(("Behavior", "decode_arrays", "entity_key", "push_behaviors"), "push"),
}

if TYPE_CHECKING:
    from feature_repo.push import Behavior, decode_arrays, entity_key, push_behaviors
    from feature_repo.views import definitions, feast_type, view_fields


def __getattr__(name: str) -> Any:
    module = _NEED_FEAST.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CATEGORY_SEQUENCE_FEATURES",
    "ITEM_CTR_FEATURE",
    "ITEM_PROFILE",
    "ITEM_STATS_VIEW",
    "JOIN_KEYS",
    "MAX_LENGTH_TAG",
    "SERVICES",
    "STORE_YAML",
    "TABLE_SCHEMAS",
    "TIMESTAMP_FIELD",
    "USER_BEHAVIOR",
    "USER_BEHAVIOR_PUSH",
    "USER_CATEGORY_BEHAVIOR",
    "USER_CATEGORY_BEHAVIOR_PUSH",
    "USER_PROFILE",
    "VIEWS",
    "Behavior",
    "decode_arrays",
    "definitions",
    "entity_key",
    "feast_type",
    "feature_names",
    "push_behaviors",
    "store_config",
    "table_path",
    "view_fields",
    "write_store_config",
]
