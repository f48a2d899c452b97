"""`seqrank audit`: checks of the deployed system against the offline data."""

from __future__ import annotations

import json
from pathlib import Path

import click

from seqrank.cli.common import CONFIG_HELP, SET_HELP, cli_config
from seqrank.paths import StatePaths


@click.group()
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

    cfg = cli_config(config, overrides)
    report = run_audit(log_dir or StatePaths(cfg.state_dir).request_log, data, cfg.features.category_k)
    click.echo(json.dumps(report, indent=2))
