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

    cfg = _config(config, overrides)
    try:
        report = validate_step.run(data, cfg.validate_, docs_dir=docs, against=against)
    except validate_step.ValidationFailed as err:
        raise click.ClickException(str(err)) from None
    click.echo(json.dumps(report, indent=2, default=str))


@main.command()
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
    cfg = _config(config, overrides, **fields)
    if resume and cfg.train.checkpoint_dir is None:
        raise click.UsageError("--resume needs --checkpoint-dir (or train.checkpoint_dir)")
    result = train_step.run(data, cfg, tags={"source": "cli"}, progress=sys.stderr.isatty(), resume=resume)
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
    run_server(bundle, feast_dir or paths.feast, cfg.serve, request_log_dir=paths.request_log)


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
def audit() -> None:
    """Audits of the deployed system against the offline data."""


@audit.command(name="skew")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="An ingest output.")
@click.option("--log", "log_dir", type=click.Path(path_type=Path), help="Request log (default: the state's).")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def audit_skew(data: Path, log_dir, config, overrides) -> None:
    """Replay the sampled serving log: recompute each request's features offline as of its time
    and report the mismatch rate per feature (sequence and category sub-sequence)."""
    from components.validate.skew import audit as run_audit

    cfg = _config(config, overrides)
    report = run_audit(log_dir or StatePaths(cfg.state_dir).request_log, data, cfg.features.category_k)
    click.echo(json.dumps(report, indent=2))


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


@bench.command(name="quality")
@click.option("--models", help="Comma-separated registry names (default: every model).")
@click.option("--input", "inputs", multiple=True, help="Raw logs instead of generated ones (repeatable).")
@click.option("--format", "fmt", default="auto", show_default=True, help="Ingest format of --input.")
@click.option("--work", type=click.Path(path_type=Path), help="Keep logs and ingest here; reused if present.")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_quality(models, inputs, fmt, work, config, overrides, as_json) -> None:
    """Every model's test AUC/GAUC on the same logs, beside the oracle and a popularity baseline.

    Generated logs by default (the `generator` config section); model and train sections apply
    to every model.
    """
    from benchmarks.bench_quality import benchmark_quality, table

    cfg = _config(config, overrides)
    try:
        result = benchmark_quality(
            models.split(",") if models else None,
            generator=cfg.generator,
            inputs=list(inputs) or None,
            fmt=fmt,
            model_cfg=cfg.model,
            train_cfg=cfg.train,
            work=work,
        )
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(json.dumps(result) if as_json else table(result))


@bench.command(name="ingest")
@click.option("--events", type=int, default=1_000_000, show_default=True, help="Generated raw events.")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default="jsonl", show_default=True
)
@click.option("--runner-option", "runner_options", multiple=True, help="Extra Beam option (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_ingest(events: int, fmt: str, runner_options: tuple[str, ...], as_json: bool) -> None:
    """Beam ingest events/s end to end on generated raw logs (budget 100,000/s)."""
    from benchmarks.bench_ingest import benchmark_ingest

    _emit(benchmark_ingest(events, fmt, runner_options=list(runner_options)), as_json)


@main.group()
def features() -> None:
    """The Feast feature store: materialize, push new behaviors, look up what it holds."""


FEAST_HELP = "Feast directory (default: <state_dir>/feast)."
INDEX_HELP = "Ids are dense vocab indices, not raw ids from the logs."


def _feast_dir(cfg: PipelineConfig, feast_dir: Path | None) -> Path:
    return feast_dir or StatePaths(cfg.state_dir).feast


def _dense(cfg: PipelineConfig, entity: str, raw: str, as_index: bool, required: bool) -> int:
    """The dense index of a raw id through the state's vocab (0 when unknown and not required)."""
    if as_index:
        try:
            return int(raw)
        except ValueError:
            raise click.BadParameter(f"{entity} {raw!r} is not an integer index") from None
    import pyarrow.parquet as pq

    path = StatePaths(cfg.state_dir).vocab / f"{entity}.parquet"
    if not path.exists():
        raise click.ClickException(f"no {entity} vocab at {path}: run ingest first, or pass --index")
    hits = pq.read_table(path, columns=["index"], filters=[("raw", "==", raw)]).column("index").to_pylist()
    if not hits and required:
        raise click.ClickException(f"{entity} {raw!r} is not in the vocab at {path}")
    return int(hits[0]) if hits else 0


@features.command(name="materialize")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True, help="An ingest output.")
@click.option("--feast", "feast_dir", type=click.Path(path_type=Path), help=FEAST_HELP)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def features_materialize(data: Path, feast_dir, config, overrides) -> None:
    """Build the feature tables from an ingest output, apply the repo, fill the online store."""
    from components import features as features_step

    cfg = _config(config, overrides)
    summary = features_step.run(data, _feast_dir(cfg, feast_dir), cfg.features)
    click.echo(json.dumps(summary, indent=2, default=str))


@features.command(name="push")
@click.option("--user", required=True, help="User id (raw, or an index with --index).")
@click.option("--item", required=True, help="Item id.")
@click.option("--category", required=True, help="Category id of the item.")
@click.option("--ts", type=int, help="Behavior time in epoch ms (default: now).")
@click.option("--index", "as_index", is_flag=True, help=INDEX_HELP)
@click.option("--feast", "feast_dir", type=click.Path(path_type=Path), help=FEAST_HELP)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def features_push(
    user: str, item: str, category: str, ts, as_index: bool, feast_dir, config, overrides
) -> None:
    """Push one new behavior into the online sequence and its category sub-sequence."""
    from components import features as features_step

    cfg = _config(config, overrides)
    event = (
        _dense(cfg, "user", user, as_index, required=True),
        _dense(cfg, "item", item, as_index, required=True),
        _dense(cfg, "category", category, as_index, required=True),
        ts if ts is not None else int(time.time() * 1000),
    )
    try:
        pushed = features_step.push_behaviors(_feast_dir(cfg, feast_dir), [event])
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(
        json.dumps({"behavior": dict(zip(("user", "item", "category", "ts"), event, strict=True)), **pushed})
    )


@features.command(name="get")
@click.option("--user", required=True, help="User id (raw, or an index with --index).")
@click.option(
    "--category", "categories", multiple=True, help="Also the sub-sequence of this category (repeatable)."
)
@click.option("--index", "as_index", is_flag=True, help=INDEX_HELP)
@click.option("--feast", "feast_dir", type=click.Path(path_type=Path), help=FEAST_HELP)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def features_get(
    user: str, categories: tuple[str, ...], as_index: bool, feast_dir, config, overrides
) -> None:
    """Print the user's online sequence (and category sub-sequences) as JSON, in dense indices.

    Unknown users and categories print empty sequences.
    """
    from serving.features import OnlineFeatures

    cfg = _config(config, overrides)
    try:
        online = OnlineFeatures(_feast_dir(cfg, feast_dir))
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from None
    index = _dense(cfg, "user", user, as_index, required=False)
    wanted = {c: _dense(cfg, "category", c, as_index, required=False) for c in categories}
    held = online.category_sequences(index, [i for i in wanted.values() if i > 0])
    empty: dict[str, list[int]] = {"cat_seq_item": [], "cat_seq_ts": []}
    result = {
        "user": user,
        "user_index": index,
        "sequence": {name: values.tolist() for name, values in online.user_sequence(index).items()},
        "categories": {
            c: {"category_index": i, **({k: v.tolist() for k, v in held[i].items()} if i > 0 else empty)}
            for c, i in wanted.items()
        },
    }
    click.echo(json.dumps(result))


@bench.command(name="features")
@click.option("--history", type=int, default=1_000, show_default=True, help="Behaviors per user sequence.")
@click.option(
    "--categories", type=int, default=20, show_default=True, help="Category sub-sequences per lookup."
)
@click.option("--users", type=int, default=2_000, show_default=True, help="Users in the synthetic store.")
@click.option("--reads", type=int, default=3_000, show_default=True, help="Timed lookups.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_features(history: int, categories: int, users: int, reads: int, as_json: bool) -> None:
    """Online lookup of a user's sequence plus category sub-sequences from Feast (budget p99 ≤ 2 ms)."""
    from benchmarks.bench_features import benchmark_features

    _emit(benchmark_features(history=history, categories=categories, users=users, reads=reads), as_json)


if __name__ == "__main__":
    sys.exit(main())
