"""Models over time: runs side by side, rollback to the previous champion, a run's HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from seqrank.cli.common import CONFIG_HELP, SET_HELP, cli_config, console, emit
from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths

STATE_HELP = "Where all local state lives (the state_dir of the runs)."
# The metrics the train step logs on every run under these names, so `mlflow ui` compares them too.
COMPARED = ("test_auc", "test_gauc", "test_logloss", "test_calibration")


def _config(config: str | None, overrides: tuple[str, ...], state_dir: Path | None) -> PipelineConfig:
    return cli_config(config, overrides, state_dir=str(state_dir) if state_dir else None)


def model_rows(cfg: PipelineConfig, limit: int) -> list[dict[str, Any]]:
    """The experiment's runs, newest first: model, data fingerprint, test metrics, gate, alias."""
    from components import tracking

    paths = StatePaths.of(cfg)
    client = tracking.client(paths)
    experiment = client.get_experiment_by_name(cfg.train.experiment)
    if experiment is None:
        return []
    aliases: dict[str, list[str]] = {}
    versions: dict[str, str] = {}
    name = cfg.train.registered_model
    from mlflow.exceptions import MlflowException

    by_version: dict[str, str] = {}
    for version in client.search_model_versions(f"name='{name}'"):
        versions[version.run_id] = str(version.version)
        by_version[str(version.version)] = version.run_id
    try:
        # The registered model holds alias -> version; search results leave aliases out.
        for alias, number in client.get_registered_model(name).aliases.items():
            if str(number) in by_version:
                aliases.setdefault(by_version[str(number)], []).append(alias)
    except MlflowException:
        pass  # nothing registered yet: no aliases
    rows = []
    for run in client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`seqrank.step` = 'train'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    ):
        tags, metrics = run.data.tags, run.data.metrics
        rows.append(
            {
                "run": run.info.run_name,
                "run_id": run.info.run_id,
                "pipeline_run": tags.get("pipeline_run", ""),
                "model": tags.get("model_name", ""),
                "data": tags.get("data_manifest_sha256", "")[:10],
                **{k.removeprefix("test_"): metrics.get(k) for k in COMPARED},
                "gate": tags.get("gate_decision", "—"),
                "version": versions.get(run.info.run_id, ""),
                "alias": ",".join(sorted(aliases.get(run.info.run_id, []))),
            }
        )
    return rows


@click.command()
@click.option("--limit", default=20, show_default=True, help="How many of the newest runs to show.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run instead of a table.")
@click.option("--state-dir", type=click.Path(path_type=Path), help=STATE_HELP)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def models(limit, as_json, state_dir, config, overrides) -> None:
    """The experiment's runs side by side: model, data, test metrics, gate decision, alias.

    The same runs compare in `mlflow ui` on the metric names shown here (test_auc, test_gauc,
    test_logloss, test_calibration) and the gate_decision tag.
    """
    from rich.table import Table

    cfg = _config(config, overrides, state_dir)
    rows = model_rows(cfg, limit)
    if as_json:
        for row in rows:
            emit(row, True)
        return
    if not rows:
        click.echo(f"no runs in experiment {cfg.train.experiment!r} under {StatePaths.of(cfg).root}")
        return
    table = Table(title=f"experiment {cfg.train.experiment} (newest first)", title_justify="left")
    columns = ("run", "model", "data", "auc", "gauc", "logloss", "calibration", "gate", "version", "alias")
    for column in columns:
        table.add_column(
            column, justify="right" if column in {"auc", "gauc", "logloss", "calibration"} else "left"
        )
    for row in rows:
        table.add_row(
            *(
                f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c] if row[c] is not None else "—")
                for c in columns
            )
        )
    from rich.console import Console

    # Wide enough for every column whatever the terminal (a pipe reports 80 columns).
    Console(width=max(console().width, 130)).print(table)


@click.command()
@click.option("--state-dir", type=click.Path(path_type=Path), help=STATE_HELP)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def rollback(state_dir, config, overrides) -> None:
    """Make the `previous` model live again, with its bundle and its feature store.

    One switch of the live release, as deploy does; a running service (deploy.reload_urls, or the
    local one) is told to reload with $SEQRANK_ADMIN_TOKEN.
    """
    from components.deploy.export import rollback as run_rollback

    cfg = _config(config, overrides, state_dir)
    try:
        result = run_rollback(cfg)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    reloads = result.pop("reload")
    emit(result, False)
    for r in reloads:
        click.echo(f"{'reload ' + r['url']:>28}  {r['status']}")


def resolve_run(cfg: PipelineConfig, run: str) -> str:
    """An MLflow run id from a run id, a run name, a pipeline run name, or `latest`."""
    rows = model_rows(cfg, 1 if run == "latest" else 500)
    for row in rows:
        if run in ("latest", row["run_id"], row["run"], row["pipeline_run"]):
            return str(row["run_id"])
    raise click.ClickException(f"no train run {run!r} in experiment {cfg.train.experiment!r}")


@click.command()
@click.argument("run", default="latest")
@click.option("--state-dir", type=click.Path(path_type=Path), help=STATE_HELP)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
def report(run, state_dir, config, overrides) -> None:
    """Write the HTML report of RUN (MLflow run id or name, pipeline run name, or `latest`).

    The page is self-contained (plots inlined) and is logged to the run as report/<name>.html.
    """
    from components.evaluate import report as run_report

    cfg = _config(config, overrides, state_dir)
    run_id = resolve_run(cfg, run)
    try:
        path = run_report.write(StatePaths.of(cfg), run_id)
    except OSError as err:
        raise click.ClickException(f"run {run_id} has no step summaries to report on: {err}") from None
    click.echo(str(path))


COMMANDS: tuple[click.Command, ...] = (models, rollback, report)
