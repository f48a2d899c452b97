"""What the CLI's command groups share: config loading with overrides, help texts, output."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from seqrank.config import ConfigError, PipelineConfig, load_config
from seqrank.paths import StatePaths, keep_state_local

if TYPE_CHECKING:
    from rich.console import Console

CONFIG_HELP = "YAML config (default: the packaged laptop config)."
SET_HELP = "Override a config field, e.g. --set train.epochs=5 (repeatable)."


def cli_config(config: str | None, overrides: tuple[str, ...], **fields: Any) -> PipelineConfig:
    """Load and validate the config; flags given on the command line become overrides."""
    extra = [f"{key}={json.dumps(value)}" for key, value in fields.items() if value is not None]
    try:
        cfg = load_config(config, [*extra, *overrides])
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    # model.options belong to the chosen model, whose options class lives with it in training.
    from training.models import check_options

    try:
        check_options(cfg.model.name, cfg.model.options)
    except ValueError as err:
        raise click.ClickException(f"invalid config: {err}") from None
    # Steps run in subprocesses with other working directories: pin the state dir absolutely.
    cfg = cfg.model_copy(update={"state_dir": cfg.state_dir.resolve()})
    keep_state_local(StatePaths.of(cfg))
    return cfg


def console() -> Console:
    """The rich console for progress and summaries (rich is imported only when one is needed)."""
    from rich.console import Console

    return Console()


def emit(result: dict[str, Any], as_json: bool) -> None:
    """Print a flat result as one JSON object, or as aligned `key  value` lines."""
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:>28}  {value}")
