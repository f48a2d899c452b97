"""Compile the pipeline to KFP IR YAML, and manage recurring runs on a Kubeflow Pipelines server."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from seqrank.config import PipelineConfig


def compile_pipeline(cfg: PipelineConfig, out: Path, gpus: int | None = None) -> Path:
    """Write the pipeline for `cfg` to `out`; the same config gives the same bytes.

    The config the YAML carries as its default is `portable_config(cfg)`: no path of this machine.
    """
    from kfp import compiler

    from pipelines.pipeline import build_pipeline

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(portable_config(cfg), gpus), str(out))
    return out


def portable_config(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` without this machine's state dir (the default, relative `.seqrank`, takes its place)."""
    data = cfg.to_dict()
    data.pop("state_dir")
    return cfg.model_validate(data)


def cluster_config(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` as a scheduled run receives it: nothing of the submitting machine's file system.

    Raises ValueError when shared state would fall back to a local directory.
    """
    problems = []
    if not cfg.infra.root:
        problems.append("infra.root is empty, so state would live in state_dir on each pod")
    elif not Path(cfg.infra.root).is_absolute():
        problems.append(f"infra.root = {cfg.infra.root!r} must be an absolute path inside the pods")
    if not cfg.infra.mlflow_tracking_uri:
        problems.append("infra.mlflow_tracking_uri is empty, so each pod would track to its own SQLite file")
    if not cfg.input:
        problems.append("input is empty: a scheduled run reads logs, it does not generate them")
    if problems:
        raise ValueError("this config cannot run on a cluster: " + "; ".join(problems))
    return portable_config(cfg)


def schedule(
    cfg: PipelineConfig,
    host: str,
    cron: str,
    experiment: str = "seqrank",
    job_name: str = "seqrank-scheduled",
    gpus: int | None = None,
) -> str:
    """Create a recurring run (cron in KFP's 6-field format) on the server at `host`; return its id."""
    import kfp

    from pipelines.local import run_parameters

    cfg = cluster_config(cfg)
    client = kfp.Client(host=host)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "seqrank.yaml", gpus)
        exp = client.create_experiment(experiment)
        run = client.create_recurring_run(
            experiment_id=exp.experiment_id,
            job_name=job_name,
            cron_expression=cron,
            pipeline_package_path=str(package),
            params={"config_yaml": cfg.to_yaml(), "inputs": list(cfg.input), **run_parameters(cfg)},
        )
    return str(run.recurring_run_id)


def list_schedules(host: str, experiment: str | None = None) -> list[dict[str, Any]]:
    """The server's recurring runs (in `experiment` when given): id, name, cron, status."""
    import kfp

    client = kfp.Client(host=host)
    experiment_id = client.get_experiment(experiment_name=experiment).experiment_id if experiment else None
    found = client.list_recurring_runs(experiment_id=experiment_id, page_size=100).recurring_runs or []
    return [
        {
            "id": r.recurring_run_id,
            "name": r.display_name,
            "cron": r.trigger.cron_schedule.cron if r.trigger and r.trigger.cron_schedule else None,
            "status": r.status,
        }
        for r in found
    ]


def delete_schedule(host: str, recurring_run_id: str) -> None:
    import kfp

    kfp.Client(host=host).delete_recurring_run(recurring_run_id)
