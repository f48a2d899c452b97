"""Write the local `feature_store.yaml` (file registry, SQLite online store) for a Feast directory."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import yaml

# Feast 0.67 writes online keys with serialization v3; older versions are deprecated and would make
# keys written by one process unreadable by another configured differently.
ENTITY_KEY_SERIALIZATION_VERSION = 3
STORE_YAML = "feature_store.yaml"
REGISTRY_FILE = "registry.db"
ONLINE_DB_FILE = "online.db"
CLUSTER_YAML = Path(__file__).with_name("feature_store.cluster.yaml")


def store_config(project: str) -> dict[str, Any]:
    """The local store configuration as a dict; paths are relative to the directory holding it."""
    # Relative paths resolve against the FeatureStore's repo_path (the Feast directory), so the
    # directory can be moved or mounted elsewhere without rewriting the file.
    return {
        "project": project,
        "provider": "local",
        "registry": {"registry_type": "file", "path": REGISTRY_FILE},
        "online_store": {"type": "sqlite", "path": ONLINE_DB_FILE},
        # `file` is Feast's name for its Dask offline store reading Parquet files.
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
        "auth": {"type": "no_auth"},
    }


def write_store_config(feast_dir: Path, project: str) -> Path:
    """Write `feast_dir/feature_store.yaml` atomically and return its path.

    The registry is `feast_dir/registry.db` and the SQLite online store `feast_dir/online.db`.
    """
    feast_dir = Path(feast_dir)
    feast_dir.mkdir(parents=True, exist_ok=True)
    path = feast_dir / STORE_YAML
    tmp = feast_dir / f".{STORE_YAML}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(yaml.safe_dump(store_config(project), sort_keys=False))
    os.replace(tmp, path)
    return path
