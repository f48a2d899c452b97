"""Compile the pipeline to KFP IR YAML, and schedule recurring runs on a Kubeflow Pipelines server."""

from __future__ import annotations

from pathlib import Path

from seqrank.config import PipelineConfig


def compile_pipeline(out: Path) -> Path:
    from kfp import compiler

    from pipelines.pipeline import seqrank_pipeline

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(seqrank_pipeline, str(out))
    return out


def schedule(
    cfg: PipelineConfig,
    host: str,
    cron: str,
    inputs: list[str],
    experiment: str = "seqrank",
    users: str = "",
    items: str = "",
) -> str:
    """Create a recurring run (cron in KFP's 6-field format) on the server at `host`; return its id."""
    import tempfile

    import kfp

    client = kfp.Client(host=host)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "seqrank.yaml")
        exp = client.create_experiment(experiment)
        run = client.create_recurring_run(
            experiment_id=exp.experiment_id,
            job_name="seqrank-scheduled",
            cron_expression=cron,
            pipeline_package_path=str(package),
            params={
                "config_yaml": cfg.to_yaml(),
                "run_id": "{{workflow.uid}}",
                "inputs": inputs,
                "users": users,
                "items": items,
            },
        )
    return run.recurring_run_id
