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
    and report the mismatch rate per feature (sequence and category sub-sequence); compare each
    feature's served distribution with the training examples' (L-infinity distance for ids,
    Jensen-Shannon divergence for lengths and ages). Exits non-zero when a distance passes its
    threshold (validate.skew_max_linf, validate.skew_max_js)."""
    from components.validate.skew import audit as run_audit

    cfg = cli_config(config, overrides)
    report = run_audit(
        log_dir or StatePaths(cfg.state_dir).request_log,
        data,
        cfg.features.category_k,
        validate_cfg=cfg.validate_,
    )
    click.echo(json.dumps(report, indent=2))
    if report["failures"]:
        lines = "\n".join(f"  - {failure}" for failure in report["failures"])
        raise click.ClickException(f"train/serve skew past the thresholds:\n{lines}")
