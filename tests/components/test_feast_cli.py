"""Feast's own CLI reads the live feature store: `feast -c <state>/feast ...` and `seqrank feast ...`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from components import features
from feature_repo.contracts import VIEWS
from seqrank.cli import main
from tests.helpers.feature_store import CFG, make_ingest_dir

FEAST = str(Path(sys.executable).parent / "feast")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir whose live store (`<state>/feast`) a real features run wrote, as materialize does."""
    root = tmp_path_factory.mktemp("feast-cli")
    features.run(make_ingest_dir(root / "ingest"), root / "state" / "feast", CFG)
    return root / "state"


def _names(listing: str) -> set[str]:
    """The first column of a Feast `... list` table, below its header."""
    return {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}


def test_feast_cli_on_the_live_store(state: Path) -> None:
    views = subprocess.run(
        [FEAST, "-c", str(state / "feast"), "feature-views", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(VIEWS) <= _names(views.stdout)


def test_seqrank_feast_runs_feast_on_the_live_store(state: Path) -> None:
    args = ["-m", "seqrank.cli", "feast", "--set", f"state_dir={state}", "entities", "list"]
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True)
    assert {"user", "item"} <= _names(done.stdout)


def test_seqrank_feast_before_any_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["feast", "--set", f"state_dir={tmp_path}", "entities", "list"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: no live feature store yet ({tmp_path / 'feast'}): "
        "run `seqrank run` or `seqrank features materialize` first"
    )


@pytest.mark.parametrize("args", [["apply"], ["--log-level", "INFO", "plan"], ["teardown"]])
def test_seqrank_feast_refuses_what_would_drop_the_live_views(args: list[str], state: Path) -> None:
    result = CliRunner().invoke(main, ["feast", "--set", f"state_dir={state}", *args])
    assert result.exit_code == 2
    assert "would drop its views" in result.stderr and "seqrank features materialize" in result.stderr
    assert "Traceback" not in result.output
