"""The pipeline steps one at a time: generate, ingest, validate, train, serve, and config."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from seqrank.cli.common import CONFIG_HELP, SET_HELP, cli_config, port_free
from seqrank.errors import PortInUseError
from seqrank.paths import StatePaths


@click.command()
@click.option("--users", type=int, help="Simulated users.")
@click.option("--items", type=int, help="Catalogue size.")
@click.option("--days", type=int, help="Days of logs.")
@click.option("--seed", type=int, help="Random seed (same seed, same logs).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def generate(users, items, days, seed, out: Path, config, overrides) -> None:
    """Simulate raw impression/click logs with a known click-probability oracle."""
    from simulator import generate as run_generator

    cfg = cli_config(
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


@click.command()
@click.option("--input", "inputs", multiple=True, required=True, help="Raw log files or globs (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv", "parquet", "movielens", "taobao", "amazon"]),
    default="auto",
    show_default=True,
    help="Raw log format, or a public data set adapter (inputs are the data set's files or folder).",
)
@click.option("--users", type=click.Path(exists=True, path_type=Path), help="Users side table (Parquet).")
@click.option("--items", type=click.Path(exists=True, path_type=Path), help="Items side table (Parquet).")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def ingest(inputs, out: Path, fmt: str, users, items, config, overrides) -> None:
    """Run the Beam ingest step alone and print its reconciliation."""
    from components import ingest as ingest_step

    cfg = cli_config(config, overrides)
    manifest = ingest_step.run(
        list(inputs),
        out,
        cfg.ingest,
        users=users,
        items=items,
        vocab_dir=StatePaths.of(cfg).vocab,
        fmt=fmt,
    )
    click.echo(json.dumps(manifest, indent=2, default=str))


@click.command()
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="An ingest output.")
@click.option("--docs", type=click.Path(path_type=Path), help="Write Great Expectations Data Docs here.")
@click.option(
    "--against",
    type=click.Path(exists=True, path_type=Path),
    help="A previous validation or ingest output: also check drift against it.",
)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def validate(data: Path, docs, against, config, overrides) -> None:
    """Run the data validation suites on an ingest output; exit non-zero when they fail."""
    from components import validate as validate_step

    cfg = cli_config(config, overrides)
    try:
        report = validate_step.run(data, cfg.validate_, docs_dir=docs, against=against)
    except validate_step.ValidationFailed as err:
        raise click.ClickException(str(err)) from None
    click.echo(json.dumps(report, indent=2, default=str))


@click.command()
@click.option("--model", help="Model name from the registry (din, emb_mlp, ...).")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="An ingest output.")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option(
    "--checkpoint-dir",
    type=click.Path(path_type=Path),
    help="Checkpoint every epoch here (train.checkpoint_dir).",
)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --checkpoint-dir.")
def train(model, data: Path, config, overrides, checkpoint_dir, resume) -> None:
    """Train one model on an ingest output and record it as an MLflow run.

    Under torchrun it trains data-parallel, e.g. on 2 CPU processes:
    `torchrun --standalone --nproc-per-node 2 -m seqrank.cli train --data DIR`.
    """
    from components import train as train_step

    fields = {"model.name": model, "train.checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None}
    cfg = cli_config(config, overrides, **fields)
    if resume and cfg.train.checkpoint_dir is None:
        raise click.UsageError("--resume needs --checkpoint-dir (or train.checkpoint_dir)")
    result = train_step.run(data, cfg, tags={"source": "cli"}, progress=sys.stderr.isatty(), resume=resume)
    click.echo(json.dumps(result, indent=2, default=str))


@click.command()
@click.option("--bundle", type=click.Path(path_type=Path), help="Serving bundle (default: the champion).")
@click.option(
    "--feast", "feast_dir", type=click.Path(path_type=Path), help="Feast repo dir (default: state)."
)
@click.option("--host", help="Bind address (default 127.0.0.1 from the config).")
@click.option("--port", type=int, help="Port.")
@click.option("--workers", type=int, help="Service processes on the port (serve.workers; docs/serving.md).")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def serve(bundle, feast_dir, host, port, workers, config, overrides) -> None:
    """Serve the champion model: POST /v1/rank {"user_id", "candidates": [...]}; /docs for the API."""
    from serving.app import serve as run_server

    cfg = cli_config(config, overrides, **{"serve.host": host, "serve.port": port, "serve.workers": workers})
    paths = StatePaths.of(cfg)
    bundle = bundle or paths.champion_bundle
    # Checked before the model loads, so a taken port is said in one line rather than in uvicorn's
    # log after seconds of loading; a process taking the port in between still fails in uvicorn.
    if not port_free(cfg.serve.host, cfg.serve.port):
        raise PortInUseError(
            f"port {cfg.serve.port} on {cfg.serve.host} is in use: stop what listens there or pass --port"
        )
    if not (bundle / "bundle.json").exists():
        what = "no champion yet" if bundle == paths.champion_bundle else "not a serving bundle"
        raise click.ClickException(f"{what} ({bundle}): run `seqrank run` first, or pass --bundle")
    run_server(bundle, feast_dir or paths.feast, cfg.serve, request_log_dir=paths.request_log)


# Feast commands that would rebuild the live store from Python definitions in its directory, where
# there are none (feature_repo.views builds them per data directory): `feast plan` there lists every
# view and service as deleted, and `apply` would delete them. The features step owns those writes.
_FEAST_WRITES = {
    "apply": "seqrank features materialize",
    "plan": "seqrank features materialize",
    "teardown": "seqrank features materialize",
    "materialize": "seqrank features materialize",
    "materialize-incremental": "seqrank features materialize",
}
# Feast's own options that take a value, to find its subcommand after them.
_FEAST_VALUE_OPTIONS = {"-c", "--chdir", "-f", "--feature-store-yaml", "--log-level"}


def _feast_subcommand(args: tuple[str, ...]) -> str | None:
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _FEAST_VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


@click.command(
    name="feast",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.argument("feast_args", nargs=-1, type=click.UNPROCESSED)
def feast_cli(config, overrides, feast_args: tuple[str, ...]) -> None:
    """Run Feast's own CLI on the live feature store, e.g. `seqrank feast feature-views list`.

    The same as `feast -c <state_dir>/feast ...`: the live store's directory holds the
    feature_store.yaml, registry and online store that the service reads. Reads only: apply, plan,
    teardown and materialize are refused (the features step writes the store).
    """
    import shutil
    import subprocess

    from feature_repo.store_config import STORE_YAML

    command = _feast_subcommand(feast_args)
    if command in _FEAST_WRITES:
        raise click.UsageError(
            f"`feast {command}` on the live store would drop its views (their definitions are built by "
            f"the features step, not read from the store's folder): use `{_FEAST_WRITES[command]}`"
        )
    cfg = cli_config(config, overrides)
    store = StatePaths.of(cfg).feast
    if not (store / STORE_YAML).is_file():
        raise click.ClickException(
            f"no live feature store yet ({store}): run `seqrank run` or `seqrank features materialize` first"
        )
    # The venv's own `feast` first: the one on PATH may be another install with another Feast.
    here = Path(sys.executable).parent / "feast"
    feast = str(here) if here.is_file() else shutil.which("feast")
    if feast is None:
        raise click.ClickException(
            "no `feast` executable next to this Python or on PATH: reinstall the project"
        )
    done = subprocess.run([feast, "-c", str(store), *feast_args], check=False)
    # Feast has said what went wrong, if anything; its exit code is the answer.
    sys.exit(done.returncode)


@click.command(name="config")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def show_config(config, overrides) -> None:
    """Print the effective, validated config."""
    click.echo(cli_config(config, overrides).to_yaml())


COMMANDS: tuple[click.Command, ...] = (generate, ingest, validate, train, serve, feast_cli, show_config)
