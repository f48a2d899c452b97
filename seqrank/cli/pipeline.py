"""The whole pipeline: run it locally, compile it for Kubeflow, schedule recurring runs."""

from __future__ import annotations

import hashlib
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from seqrank.cli.common import CONFIG_HELP, SET_HELP, cli_config, console
from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from pipelines.progress import StepEvent


def _generated_logs(cfg: PipelineConfig) -> Path:
    """Generate logs for the config's generator settings once; later runs reuse them."""
    from simulator import generate as run_generator

    key = hashlib.sha256(cfg.generator.model_dump_json().encode()).hexdigest()[:12]
    out = StatePaths.of(cfg).raw / f"generated-{key}"
    if not (out / "summary.json").exists():
        console().print(f"[bold]generating logs[/] into {out}", soft_wrap=True)
        run_generator(cfg.generator, out, progress=True)
    return out


@click.command()
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.option("--state-dir", type=click.Path(path_type=Path), help="Where all local state lives.")
@click.option(
    "--start",
    "start_date",
    help="Backfill window: examples from this date (ISO, UTC), history from all earlier logs.",
)
@click.option("--end", "end_date", help="Backfill window: examples and history before this date (ISO, UTC).")
@click.option(
    "--no-cache", is_flag=True, help="Run every step, even ingest and validation of unchanged inputs."
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Stream every step's logs to the console (they always go to the log).",
)
def run(config, overrides, state_dir, start_date, end_date, no_cache, verbose) -> None:
    """Run the whole pipeline locally through Kubeflow's subprocess runner.

    Ingest (Beam) → validate (Great Expectations) → features (Feast) → train (PyTorch, MLflow)
    → gate (challenger vs champion) → deploy (champion alias + serving bundle).

    The console shows a line per step; the steps' own logs go to a file under the state dir's
    logs/ (named at the start), streamed as they come with --verbose.
    """
    from rich.console import Console

    from pipelines.local import run_local
    from pipelines.progress import captured_run
    from seqrank.cli.report import print_run_summary

    cfg = cli_config(config, overrides, state_dir=str(state_dir) if state_dir else None)
    users = items = None
    inputs = list(cfg.input)
    if not inputs:
        raw = _generated_logs(cfg)
        inputs, users, items = [str(raw / "events.jsonl")], raw / "users.parquet", raw / "items.parquet"
    log = StatePaths.of(cfg).logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    # Bound to the console as it is now: inside the run stdout and stderr go to the log.
    out = Console(file=sys.stdout, highlight=False)
    out.print(f"[bold]seqrank run[/] model {cfg.model.name}; step logs: {log}", soft_wrap=True)
    lines = StepLines(out, spinner=out.is_terminal and not verbose)
    start = time.perf_counter()
    try:
        with captured_run(log, lines, echo=sys.stdout if verbose else None):
            steps = run_local(
                cfg,
                inputs,
                users,
                items,
                start_date=start_date or "",
                end_date=end_date or "",
                caching=not no_cache,
            )
    except RuntimeError:
        where = f" in step {lines.failed}" if lines.failed else ""
        raise click.ClickException(
            f"pipeline run failed after {time.perf_counter() - start:.0f}s{where}; its logs: {log}"
        ) from None
    finally:
        lines.stop()
    print_run_summary(out, cfg, steps, time.perf_counter() - start, log)


class StepLines:
    """One console line per finished step (✓ name, seconds, or cached; ✗ with the step's error),
    and on a terminal a spinner with the running step's elapsed time."""

    def __init__(self, console: Console, *, spinner: bool) -> None:
        self.console = console
        self.failed = ""
        self._spinner = spinner
        self._live: Progress | None = None

    def __call__(self, event: StepEvent) -> None:
        self.stop()
        if event.kind == "start":
            if self._spinner:
                from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

                self._live = Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    TimeElapsedColumn(),
                    console=self.console,
                    transient=True,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
                self._live.add_task(event.step)
                self._live.start()
        elif event.kind == "done":
            self.console.print(f"  [green]✓[/] {event.step:<18} {event.seconds:6.1f}s")
        elif event.kind == "retry":
            self.console.print(f"      retrying: {event.detail}")
        elif event.kind == "cached":
            self.console.print(f"  [green]✓[/] {event.step:<18} cached (same inputs as an earlier run)")
        else:
            self.failed = event.step
            self.console.print(f"  [red]✗[/] {event.step:<18} failed after {event.seconds:.1f}s")
            reason = failure_reason(event.tail)
            for line in reason:
                self.console.print(f"      {line}", soft_wrap=True, markup=False)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Interrupt)\w*: ")


def failure_reason(tail: list[str], most: int = 12) -> list[str]:
    """What to show of a failed step's last lines: the exception it ended with (its message's
    lines too), else the last few lines."""
    raised = [i for i, line in enumerate(tail) if _EXCEPTION_LINE.match(line.strip())]
    if not raised:
        return [line.rstrip() for line in tail if line.strip()][-5:]
    first = tail[raised[-1]]
    indent = len(first) - len(first.lstrip())
    reason = [first.strip()]
    for line in tail[raised[-1] + 1 :]:
        if not line.strip() or len(reason) == most:
            break
        reason.append(line[indent:].rstrip())
    return reason


@click.command(name="compile")
@click.option(
    "-o",
    "--out",
    "--output",
    "out",
    type=click.Path(path_type=Path),
    default=Path("seqrank-pipeline.yaml"),
    show_default=True,
    help="Where to write the pipeline YAML.",
)
@click.option("--cpu", is_flag=True, help="Request no GPU for training (overrides kubeflow.train_gpus).")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def compile_cmd(out: Path, cpu: bool, config, overrides) -> None:
    """Write the pipeline as KFP YAML for a Kubeflow Pipelines server.

    Resources, the image, caching and volumes come from the config's kubeflow section; the run
    parameters (inputs, dates, model, training and gate settings) default to its values.
    """
    from pipelines.compile import compile_pipeline

    cfg = cli_config(config, overrides)
    click.echo(f"wrote {compile_pipeline(cfg, out, gpus=0 if cpu else None)}")


@click.command()
@click.option("--host", required=True, help="Kubeflow Pipelines API endpoint, e.g. http://localhost:8888.")
@click.option("--cron", default="0 0 3 * * *", show_default=True, help="KFP cron (6 fields, with seconds).")
@click.option("--experiment", default="seqrank", show_default=True, help="KFP experiment of the runs.")
@click.option(
    "--name", "job_name", default="seqrank-scheduled", show_default=True, help="Recurring run name."
)
@click.option(
    "--input", "inputs", multiple=True, help="Raw log URIs the runs read (default: the config's input)."
)
@click.option("--cpu", is_flag=True, help="Request no GPU for training.")
@click.option("--list", "list_only", is_flag=True, help="List the recurring runs instead of creating one.")
@click.option("--delete", "delete_id", help="Delete the recurring run with this id instead.")
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def schedule(host, cron, experiment, job_name, inputs, cpu, list_only, delete_id, config, overrides) -> None:
    """Create, list or delete recurring runs of the pipeline on a Kubeflow Pipelines server.

    The runs read every path from the config's infra section (shared volume, MLflow server, Feast
    store), never from this machine.
    """
    from pipelines import compile as kfp_server

    if list_only:
        for r in kfp_server.list_schedules(host, experiment):
            click.echo(f"{r['id']}  {r['name']}  cron={r['cron']}  {r['status']}")
        return
    if delete_id:
        kfp_server.delete_schedule(host, delete_id)
        click.echo(f"deleted recurring run {delete_id}")
        return
    cfg = cli_config(config, overrides, input=list(inputs) or None)
    try:
        run_id = kfp_server.schedule(cfg, host, cron, experiment, job_name, gpus=0 if cpu else None)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"recurring run {run_id}")


COMMANDS: tuple[click.Command, ...] = (run, compile_cmd, schedule)
