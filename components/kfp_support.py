"""Helpers the kfp step bodies share: config parsing and the per-run step summaries."""

from __future__ import annotations

import json
from typing import Any

import yaml

from seqrank.config import PipelineConfig, from_dict
from seqrank.log import setup_logging
from seqrank.paths import StatePaths, keep_state_local
from seqrank.storage import read_json, write_json


def step_config(config_yaml: str) -> tuple[PipelineConfig, StatePaths]:
    setup_logging()
    cfg = from_dict(yaml.safe_load(config_yaml), "pipeline parameter config_yaml")
    paths = StatePaths(cfg.state_dir)
    keep_state_local(paths)
    return cfg, paths


def summary_path(paths: StatePaths, run_id: str, step: str):
    return paths.run_dir(run_id) / "steps" / f"{step}.json"


def finish(paths: StatePaths, run_id: str, step: str, summary: dict[str, Any]) -> str:
    """Record a step's summary where `seqrank run` reports from; return it as the step's output."""
    target = summary_path(paths, run_id, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, summary)
    return json.dumps(summary, default=str)


def load_summary(paths: StatePaths, run_id: str, step: str) -> dict[str, Any]:
    return read_json(summary_path(paths, run_id, step))
