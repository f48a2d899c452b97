"""The `seqrank` command line, the entry layer: one group; each command imports its step lazily."""

from __future__ import annotations

import click

from seqrank.cli import audit, bench, features, models, pipeline, steps


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


for _command in (
    *steps.COMMANDS,
    *pipeline.COMMANDS,
    *models.COMMANDS,
    features.features,
    bench.bench,
    audit.audit,
):
    main.add_command(_command)
