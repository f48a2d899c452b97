"""The `seqrank` command line, the entry layer: one group; each command imports its step lazily."""

from __future__ import annotations

import os
from typing import Any

import click

from seqrank.cli import audit, bench, doctor, features, models, pipeline, steps
from seqrank.cli.common import is_user_error


class _Main(click.Group):
    """The root group: a user error (`common.USER_ERRORS`) ends as one `Error: ...` message and
    exit 1, whichever command raised it; `--log-level DEBUG` lets it through with its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as err:
            if not is_user_error(err) or str(ctx.params.get("log_level", "")).upper() == "DEBUG":
                raise
            raise click.ClickException(str(err)) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="seqrank", prog_name="seqrank", message="%(prog)s %(version)s")
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
    # MLflow draws a tqdm bar for every artifact it fetches; a command's own lines say what it did.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


for _command in (
    *steps.COMMANDS,
    *pipeline.COMMANDS,
    *models.COMMANDS,
    features.features,
    bench.bench,
    audit.audit,
    doctor.doctor,
):
    main.add_command(_command)
