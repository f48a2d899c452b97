"""Logging setup for the CLI and pipeline steps (library code only calls logging.getLogger)."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | int | None = None) -> None:
    level = level or os.environ.get("SEQRANK_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # The stack's libraries are chatty at INFO; keep the user's console for seqrank's own messages.
    for noisy in ("apache_beam", "feast", "mlflow", "alembic", "great_expectations", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
