"""The `seqrank` command line: one entry point, subcommands import their step lazily."""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from seqrank.config import ConfigError, PipelineConfig, load_config
from seqrank.paths import StatePaths, keep_state_local

CONFIG_HELP = "YAML config (default: the packaged laptop config)."
SET_HELP = "Override a config field, e.g. --set train.epochs=5 (repeatable)."


def _config(config: str | None, overrides: tuple[str, ...], **fields: Any) -> PipelineConfig:
    """Load and validate the config; flags given on the command line become overrides."""
    extra = [f"{key}={json.dumps(value)}" for key, value in fields.items() if value is not None]
    try:
        cfg = load_config(config, [*extra, *overrides])
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    # Steps run in subprocesses with other working directories: pin the state dir absolutely.
    cfg = cfg.model_copy(update={"state_dir": cfg.state_dir.resolve()})
    keep_state_local(StatePaths(cfg.state_dir))
    return cfg


def _console():
    from rich.console import Console

    return Console()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level", default="INFO", show_default=True, help="Logging level for seqrank's own messages."
)
def main(log_level: str) -> None:
    """seqrank: train, validate and deploy sequence-aware CTR ranking models.

    \b
    Typical use:
      seqrank run                 # whole pipeline on generated logs, embedded defaults
      seqrank serve               # rank candidates with the champion model over HTTP
    """
    from seqrank.log import setup_logging

    setup_logging(log_level.upper())


@main.command()
@click.option("--users", type=int, help="Simulated users.")
@click.option("--items", type=int, help="Catalogue size.")
@click.option("--days", type=int, help="Days of logs.")
@click.option("--seed", type=int, help="Random seed (same seed, same logs).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def generate(users, items, days, seed, out: Path, config, overrides) -> None:
    """Simulate raw impression/click logs with a known click-probability oracle."""
    from seqrank.generator import generate as run_generator

    cfg = _config(
        config,
        overrides,
        **{
            "generator.users": users,
            "generator.items": items,
            "generator.days": days,
            "generator.seed": seed,
        },
    )
    start = time.perf_counter()
    summary = run_generator(cfg.generator, out, progress=True)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    click.echo(json.dumps(summary, indent=2, default=str))


@main.command()
@click.option("--input", "inputs", multiple=True, required=True, help="Raw log files or globs (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--format", "fmt", default="auto", show_default=True, help="auto, jsonl, csv or parquet.")
@click.option("--users", type=click.Path(exists=True, path_type=Path), help="Users side table (Parquet).")
@click.option("--items", type=click.Path(exists=True, path_type=Path), help="Items side table (Parquet).")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def ingest(inputs, out: Path, fmt: str, users, items, config, overrides) -> None:
    """Run the Beam ingest step alone and print its reconciliation."""
    from components import ingest as ingest_step

    cfg = _config(config, overrides)
    manifest = ingest_step.run(
        list(inputs),
        out,
        cfg.ingest,
        users=users,
        items=items,
        vocab_dir=StatePaths(cfg.state_dir).vocab,
        fmt=fmt,
    )
    click.echo(json.dumps(manifest, indent=2, default=str))


@main.command()
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="An ingest output.")
@click.option("--docs", type=click.Path(path_type=Path), help="Write Great Expectations Data Docs here.")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def validate(data: Path, docs, config, overrides) -> None:
    """Run the data validation suites on an ingest output; exit non-zero when they fail."""
    from components import validate as validate_step

    cfg = _config(config, overrides)
    try:
        report = validate_step.run(data, cfg.validate_, docs_dir=docs)
    except validate_step.ValidationFailed as err:
        raise click.ClickException(str(err)) from None
    click.echo(json.dumps(report, indent=2, default=str))


@main.command()
@click.option("--model", help="Model name from the registry (din, emb_mlp, ...).")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="An ingest output.")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def train(model, data: Path, config, overrides) -> None:
    """Train one model on an ingest output and record it as an MLflow run."""
    from components import train as train_step

    cfg = _config(config, overrides, **{"model.name": model})
    result = train_step.run(data, cfg, tags={"source": "cli"}, progress=sys.stderr.isatty())
    click.echo(json.dumps(result, indent=2, default=str))


def _generated_logs(cfg: PipelineConfig) -> Path:
    """Generate logs for the config's generator settings once; later runs reuse them."""
    from seqrank.generator import generate as run_generator

    key = hashlib.sha256(cfg.generator.model_dump_json().encode()).hexdigest()[:12]
    out = StatePaths(cfg.state_dir).raw / f"generated-{key}"
    if not (out / "summary.json").exists():
        _console().print(f"[bold]generating logs[/] into {out}")
        run_generator(cfg.generator, out, progress=True)
    return out


@main.command()
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option("--state-dir", type=click.Path(path_type=Path), help="Where all local state lives.")
def run(config, overrides, state_dir) -> None:
    """Run the whole pipeline locally through Kubeflow's subprocess runner.

    Ingest (Beam) → validate (Great Expectations) → features (Feast) → train (PyTorch, MLflow)
    → gate (challenger vs champion) → deploy (champion alias + serving bundle).
    """
    from pipelines.local import run_local
    from seqrank.report import print_run_summary

    cfg = _config(config, overrides, state_dir=str(state_dir) if state_dir else None)
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
        print_run_summary(_console(), cfg, run_id, time.perf_counter() - start)
        raise click.ClickException(f"pipeline run {run_id} failed: {err}") from None
    print_run_summary(_console(), cfg, run_id, time.perf_counter() - start)


@main.command()
@click.option("--bundle", type=click.Path(path_type=Path), help="Serving bundle (default: the champion).")
@click.option(
    "--feast", "feast_dir", type=click.Path(path_type=Path), help="Feast repo dir (default: state)."
)
@click.option("--host", help="Bind address (default 127.0.0.1 from the config).")
@click.option("--port", type=int, help="Port.")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def serve(bundle, feast_dir, host, port, config, overrides) -> None:
    """Serve the champion model: POST /rank {"user_id", "candidates": [...]}."""
    from serving.app import serve as run_server

    cfg = _config(config, overrides, **{"serve.host": host, "serve.port": port})
    paths = StatePaths(cfg.state_dir)
    bundle = bundle or paths.champion_bundle
    if not (bundle / "bundle.json").exists():
        raise click.ClickException(f"no serving bundle at {bundle}: run `seqrank run` first")
    run_server(bundle, feast_dir or paths.feast, cfg.serve)


@main.command(name="compile")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("seqrank-pipeline.yaml"), show_default=True
)
def compile_cmd(out: Path) -> None:
    """Write the pipeline as KFP YAML for a Kubeflow Pipelines server."""
    from pipelines.compile import compile_pipeline

    click.echo(f"wrote {compile_pipeline(out)}")


@main.command()
@click.option("--host", required=True, help="Kubeflow Pipelines API endpoint.")
@click.option("--cron", default="0 0 3 * * *", show_default=True, help="KFP cron (with seconds).")
@click.option("--input", "inputs", multiple=True, required=True, help="Raw log URIs the runs read.")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def schedule(host: str, cron: str, inputs, config, overrides) -> None:
    """Create a recurring run of the pipeline on a Kubeflow Pipelines server."""
    from pipelines.compile import schedule as create_schedule

    cfg = _config(config, overrides)
    click.echo(f"recurring run {create_schedule(cfg, host, cron, list(inputs))}")


@main.command(name="config")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def show_config(config, overrides) -> None:
    """Print the effective, validated config."""
    click.echo(_config(config, overrides).to_yaml())


@main.group()
def bench() -> None:
    """Measure the speed budgets of the design (JSON with --json)."""


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:>28}  {value}")


@bench.command(name="train")
@click.option("--model", default="din", show_default=True, help="Registry name.")
@click.option("--seq-len", type=int, default=100, show_default=True, help="History length L.")
@click.option("--dim", type=int, default=16, show_default=True, help="Embedding dim D.")
@click.option("--batch", type=int, default=1024, show_default=True, help="Batch size.")
@click.option("--steps", type=int, default=20, show_default=True, help="Timed steps per round.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True)
@click.option("--reference/--no-reference", default=True, help="Also time a straightforward DIN.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_train(model, seq_len, dim, batch, steps, precision, reference, as_json) -> None:
    """Training samples/s on synthetic batches, beside a reference DIN in the same process."""
    from benchmarks.bench_train import benchmark_train

    result = benchmark_train(
        model=model,
        seq_len=seq_len,
        dim=dim,
        batch=batch,
        steps=steps,
        precision=precision,
        reference=reference,
    )
    _emit(result, as_json)


if __name__ == "__main__":
    sys.exit(main())
