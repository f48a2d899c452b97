"""Run the pipeline on this machine with Kubeflow's local subprocess runner."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths
from seqrank.storage import read_json

log = logging.getLogger(__name__)


def run_local(
    cfg: PipelineConfig,
    inputs: list[str],
    users: Path | None = None,
    items: Path | None = None,
    *,
    start_date: str = "",
    end_date: str = "",
    caching: bool = True,
    pipeline: Any = None,
    report: bool = True,
) -> dict[str, dict[str, Any]]:
    """Execute every step in a subprocess of the current environment; return each step's summary.

    Raises RuntimeError if a step fails. With `caching`, a step kfp may cache (ingest and
    validation; see `kubeflow.cache_*`) reuses an earlier run's outputs for the same inputs; the
    cache lives in the state dir's kfp/cache. `pipeline` runs another pipeline (e.g. one loaded
    from compiled YAML) with the same parameters instead of the one built from `cfg`. With
    `report`, the run's HTML report is written and logged to the train step's MLflow run (and its
    path returned under "report").
    """
    from kfp import local

    from components.deploy.export import DEPLOY_RECORD
    from pipelines.pipeline import build_pipeline

    paths = StatePaths.of(cfg)
    paths.kfp_root.mkdir(parents=True, exist_ok=True)
    # use_venv=False: the default builds a venv per task and pip-installs from the network.
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(paths.kfp_root),
        raise_on_error=True,
        enable_caching=caching,
        cache_root=str(paths.kfp_root / "cache"),
    )
    with warnings.catch_warnings():
        # The runner warns that the cluster image is not a python:* image (locally the current
        # environment, which has seqrank installed, runs the steps) and that resource requests,
        # GPUs and Kubernetes settings mean nothing on one machine.
        warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        run = (pipeline or build_pipeline(cfg))(
            config_yaml=cfg.to_yaml(),
            inputs=list(inputs),
            users=str(users) if users else "",
            items=str(items) if items else "",
            start_date=start_date,
            end_date=end_date,
            **run_parameters(cfg),
        )
    steps = {name: json.loads(value) for name, value in run.outputs.items() if isinstance(value, str)}
    run_name = steps["train"]["pipeline_run"]
    # A cached step's outputs lie under the run that computed them.
    for step, key in (("ingest", "output"), ("validate", "data_docs")):
        steps[step]["cached"] = run_name not in str(steps[step].get(key))
    steps["gate"] = read_json(Path(run.outputs["gate"].path))
    bundle = paths.champion_bundle / "bundle.json"
    if bundle.is_file():
        release = bundle.parent.resolve()
        record = release / DEPLOY_RECORD
        live = {
            **read_json(bundle),
            **(read_json(record) if record.is_file() else {}),
            "bundle": str(paths.champion_bundle),
            "release": str(release),
        }
        # The deploy step sits under dsl.If, whose outputs the pipeline cannot return; what it
        # made live is the champion release, which names this run when it was promoted.
        steps["deploy" if steps["gate"].get("promote") else "live"] = live
    if report:
        from components.evaluate import report as run_report

        steps["report"] = {"path": str(run_report.write(paths, steps["train"]["run_id"], steps))}
    log.info("pipeline run %s finished", run_name)
    return steps


def run_parameters(cfg: PipelineConfig) -> dict[str, Any]:
    """The typed run parameters with `cfg`'s values (what a KFP UI user sees as defaults)."""
    return {
        "model_name": cfg.model.name,
        "epochs": cfg.train.epochs,
        "learning_rate": cfg.train.lr,
        "batch_size": cfg.train.batch_size,
        "gate_metric": cfg.gate.metric,
        "gate_min_delta": cfg.gate.min_delta,
        "gate_floor": cfg.gate.floor,
    }
