"""The whole pipeline: run it locally, compile it for Kubeflow, schedule recurring runs."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import click

from seqrank.cli.common import CONFIG_HELP, SET_HELP, cli_config, console
from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths


def _generated_logs(cfg: PipelineConfig) -> Path:
    """Generate logs for the config's generator settings once; later runs reuse them."""
    from simulator import generate as run_generator

    key = hashlib.sha256(cfg.generator.model_dump_json().encode()).hexdigest()[:12]
    out = StatePaths(cfg.state_dir).raw / f"generated-{key}"
    if not (out / "summary.json").exists():
        console().print(f"[bold]generating logs[/] into {out}")
        run_generator(cfg.generator, out, progress=True)
    return out


@click.command()
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option("--state-dir", type=click.Path(path_type=Path), help="Where all local state lives.")
def run(config, overrides, state_dir) -> None:
    """Run the whole pipeline locally through Kubeflow's subprocess runner.

    Ingest (Beam) → validate (Great Expectations) → features (Feast) → train (PyTorch, MLflow)
    → gate (challenger vs champion) → deploy (champion alias + serving bundle).
    """
    from pipelines.local import run_local
    from seqrank.cli.report import print_run_summary

    cfg = cli_config(config, overrides, state_dir=str(state_dir) if state_dir else None)
    users = items = None
    inputs = list(cfg.input)
    if not inputs:
        raw = _generated_logs(cfg)
        inputs, users, items = [str(raw / "events.jsonl")], raw / "users.parquet", raw / "items.parquet"
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    start = time.perf_counter()
    try:
        run_local(cfg, run_id, inputs, users, items)
    except RuntimeError as err:
        print_run_summary(console(), cfg, run_id, time.perf_counter() - start)
        raise click.ClickException(f"pipeline run {run_id} failed: {err}") from None
    print_run_summary(console(), cfg, run_id, time.perf_counter() - start)


@click.command(name="compile")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("seqrank-pipeline.yaml"), show_default=True
)
def compile_cmd(out: Path) -> None:
    """Write the pipeline as KFP YAML for a Kubeflow Pipelines server."""
    from pipelines.compile import compile_pipeline

    click.echo(f"wrote {compile_pipeline(out)}")


@click.command()
@click.option("--host", required=True, help="Kubeflow Pipelines API endpoint.")
@click.option("--cron", default="0 0 3 * * *", show_default=True, help="KFP cron (with seconds).")
@click.option("--input", "inputs", multiple=True, required=True, help="Raw log URIs the runs read.")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def schedule(host: str, cron: str, inputs, config, overrides) -> None:
    """Create a recurring run of the pipeline on a Kubeflow Pipelines server."""
    from pipelines.compile import schedule as create_schedule

    cfg = cli_config(config, overrides)
    click.echo(f"recurring run {create_schedule(cfg, host, cron, list(inputs))}")


COMMANDS: tuple[click.Command, ...] = (run, compile_cmd, schedule)
