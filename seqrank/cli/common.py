"""What the CLI's command groups share: config loading with overrides, help texts, output."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

import click

from seqrank.config import ConfigError, PipelineConfig, load_config
from seqrank.paths import StatePaths, keep_state_local

if TYPE_CHECKING:
    from rich.console import Console

# Exceptions that mean "the user asked for something that cannot be done", as module:class names:
# the CLI entry turns them into one message without importing a step's modules to name them (a
# raised exception's module is loaded already). Anything else is a bug and keeps its traceback.
USER_ERRORS = (
    "seqrank.errors:UserError",
    "seqrank.config:ConfigError",
    "seqrank.vocab:MissingVocabError",
    "components.ingest.pipeline:IngestRejectedError",
    "components.validate.failures:ValidationFailed",
    "serving.bundle:BundleError",
)

CONFIG_ENV = "SEQRANK_CONFIG"
CONFIG_HELP = f"YAML config (default: the file ${CONFIG_ENV} names, else the packaged laptop config)."
SET_HELP = "Override a config field, e.g. --set train.epochs=5 (repeatable)."


def cli_config(config: str | None, overrides: tuple[str, ...], **fields: Any) -> PipelineConfig:
    """Load and validate the config (`--config`, else $SEQRANK_CONFIG, else the packaged one);
    flags given on the command line become overrides."""
    config = config or os.environ.get(CONFIG_ENV) or None
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


def is_user_error(err: BaseException) -> bool:
    """Whether `err` is one of `USER_ERRORS` (or a subclass), i.e. not a bug."""
    for name in USER_ERRORS:
        module, cls = name.split(":")
        loaded = sys.modules.get(module)
        kind = getattr(loaded, cls, None) if loaded is not None else None
        if isinstance(kind, type) and isinstance(err, kind):
            return True
    return False


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (as uvicorn binds: with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Without it a port left in TIME_WAIT by a service just stopped would count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
