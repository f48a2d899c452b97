"""Write a Feast directory's `feature_store.yaml` from the config's infra section.

Locally: a file registry and a SQLite online store inside the directory. On a cluster: a Redis
online store and a registry on shared storage (an s3:// or gs:// file), same definitions.

The directory with this file is the one Feast's CLI runs on: the live store is `<state_dir>/feast`
(`seqrank.paths.StatePaths.feast`), so `feast -c <state_dir>/feast feature-views list`, or
`seqrank feast feature-views list`. This package holds no such file: its definitions are built by
`views.definitions` for a data directory, so Feast cannot read them from the modules, and a
`feast apply` against a folder without them deletes every view.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import yaml

from seqrank.config import FeastStoreConfig

# Feast 0.67 writes online keys with serialization v3; older versions are deprecated and would make
# keys written by one process unreadable by another configured differently.
ENTITY_KEY_SERIALIZATION_VERSION = 3
STORE_YAML = "feature_store.yaml"
REGISTRY_FILE = "registry.db"
ONLINE_DB_FILE = "online.db"


def store_config(project: str, store: FeastStoreConfig | None = None) -> dict[str, Any]:
    """The store configuration as a dict; local paths are relative to the directory holding it."""
    store = store or FeastStoreConfig()
    # Relative paths resolve against the FeatureStore's repo_path (the Feast directory), so the
    # directory can be moved or mounted elsewhere without rewriting the file.
    online: dict[str, Any] = {"type": "sqlite", "path": ONLINE_DB_FILE}
    if store.online_store == "redis":
        online = {"type": "redis", "redis_type": "redis", "connection_string": store.redis_connection}
    return {
        "project": project,
        "provider": "local",
        "registry": {
            "registry_type": "file",
            "path": store.registry or REGISTRY_FILE,
            "cache_ttl_seconds": store.registry_cache_ttl_seconds,
        },
        "online_store": online,
        # `file` is Feast's name for its Dask offline store reading Parquet files.
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
        "auth": {"type": "no_auth"},
    }


def write_store_config(feast_dir: Path, project: str, store: FeastStoreConfig | None = None) -> Path:
    """Write `feast_dir/feature_store.yaml` atomically and return its path.

    By default the registry is `feast_dir/registry.db` and the SQLite online store `feast_dir/online.db`.
    """
    feast_dir = Path(feast_dir)
    feast_dir.mkdir(parents=True, exist_ok=True)
    path = feast_dir / STORE_YAML
    tmp = feast_dir / f".{STORE_YAML}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(yaml.safe_dump(store_config(project, store), sort_keys=False))
    os.replace(tmp, path)
    return path
