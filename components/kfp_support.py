"""Helpers the kfp step bodies share: config parsing, step summaries, and the references steps hand on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from seqrank.config import PipelineConfig, from_dict
from seqrank.log import setup_logging
from seqrank.paths import StatePaths, keep_state_local
from seqrank.storage import read_json, write_json


def setup_step() -> None:
    setup_logging()


def step_config(config_yaml: str) -> tuple[PipelineConfig, StatePaths]:
    """The step's config and the shared state it names (infra section; state_dir when local)."""
    setup_step()
    cfg = from_dict(yaml.safe_load(config_yaml), "pipeline parameter config")
    paths = StatePaths.of(cfg)
    keep_state_local(paths)
    return cfg, paths


def summary(result: dict[str, Any]) -> str:
    """A step's summary as its string output (what `seqrank run` reports from)."""
    return json.dumps(result, sort_keys=True, default=str)


def write_store_ref(store: Any, result: dict[str, Any]) -> None:
    """Fill a `dsl.Output[Artifact]` that names the Feast store the features step wrote."""
    ref = {key: result[key] for key in ("feast_dir", "project", "online_store")}
    write_json(Path(store.path), ref)
    store.metadata.update(ref)


def read_store_ref(store: Any) -> dict[str, Any]:
    return dict(read_json(Path(store.path)))


def write_model_ref(model: Any, paths: StatePaths, result: dict[str, Any]) -> None:
    """Fill a `dsl.Output[Model]` that names the MLflow run and model the train step logged."""
    ref = {
        "mlflow_run_id": result["run_id"],
        "model_uri": result["model_uri"],
        "tracking_uri": paths.mlflow_uri,
        "model_name": result.get("model_name", ""),
    }
    write_json(Path(model.path), ref)
    model.metadata.update(ref)


def read_model_ref(model: Any) -> dict[str, Any]:
    return dict(read_json(Path(model.path)))
