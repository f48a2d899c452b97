"""`seqrank bench`: the speed and quality budgets of the design, measured here and now."""

from __future__ import annotations

import json
from pathlib import Path

import click

from seqrank.cli.common import CONFIG_HELP, SET_HELP, cli_config, emit


def _registry_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A model name of the registry, else a usage error listing the valid ones (no traceback)."""
    from training.models import MODELS

    if value not in MODELS:
        raise click.BadParameter(f"unknown model {value!r}; valid names: {', '.join(sorted(MODELS))}")
    return value


@click.group()
def bench() -> None:
    """Measure the speed budgets of the design (JSON with --json)."""


@bench.command(name="train")
@click.option("--model", default="din", show_default=True, callback=_registry_name, help="Registry name.")
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
    emit(result, as_json)


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

    cfg = cli_config(config, overrides)
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

    emit(benchmark_ingest(events, fmt, runner_options=list(runner_options)), as_json)


@bench.command(name="features")
@click.option("--history", type=int, default=1_000, show_default=True, help="Behaviors per user sequence.")
@click.option(
    "--categories", type=int, default=20, show_default=True, help="Category sub-sequences per lookup."
)
@click.option("--users", type=int, default=2_000, show_default=True, help="Users in the synthetic store.")
@click.option("--reads", type=int, default=3_000, show_default=True, help="Timed lookups.")
@click.option(
    "--store",
    type=click.Choice(["sqlite", "redis"]),
    default="sqlite",
    show_default=True,
    help="Online store; redis starts a redis-server on loopback.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_features(history: int, categories: int, users: int, reads: int, store: str, as_json: bool) -> None:
    """Online lookup of a user's sequence plus category sub-sequences from Feast (budget p99 ≤ 2 ms)."""
    from benchmarks.bench_features import benchmark_features

    result = benchmark_features(history=history, categories=categories, users=users, reads=reads, store=store)
    emit(result, as_json)


@bench.command(name="serve")
@click.option(
    "--model",
    default="din",
    show_default=True,
    callback=_registry_name,
    help="Registry name (its real shapes, untrained).",
)
@click.option("--candidates", type=int, default=500, show_default=True, help="Candidates per request.")
@click.option(
    "--history", type=int, default=1_000, show_default=True, help="Behaviors per user in the store."
)
@click.option("--concurrency", type=int, default=1, show_default=True, help="Client connections.")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="Timed load.")
@click.option("--workers", type=int, default=1, show_default=True, help="Service processes.")
@click.option("--torch-threads", type=int, default=1, show_default=True, help="Intra-op threads per process.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_serve(model, candidates, history, concurrency, seconds, workers, torch_threads, as_json) -> None:
    """The ranking service over HTTP on loopback, feature fetch included (budget p99 ≤ 10 ms).

    Prints p50/p95/p99, requests/s, errors and the time split (features, model, HTTP).
    """
    from benchmarks.bench_serving import benchmark_serving

    result = benchmark_serving(
        model=model,
        candidates=candidates,
        history=history,
        concurrency=concurrency,
        seconds=seconds,
        workers=workers,
        torch_threads=torch_threads,
    )
    emit(result, as_json)
