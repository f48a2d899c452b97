"""Test-wide settings: library caches and telemetry stay out of $HOME during tests too."""

import tempfile
from pathlib import Path

import pytest

from seqrank.paths import StatePaths, keep_state_local

keep_state_local(StatePaths(tempfile.mkdtemp(prefix="seqrank-test-state-")))


@pytest.fixture(scope="module")
def serving_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny ingest output, its Feast store and a DIN serving bundle (tests.helpers.serving)."""
    from tests.helpers.serving import build_serving_env

    return build_serving_env(tmp_path_factory.mktemp("serving"))
