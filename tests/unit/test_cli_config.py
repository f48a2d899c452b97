"""The CLI's config helper rejects bad model options with a clean message, before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from seqrank.cli import main


def _assert_clean_rejection(result: Result) -> None:
    # A ClickException ends in SystemExit; an escaped ValueError would be the exception here.
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "serch" in result.output and "search" in result.output, result.output
    assert "Traceback" not in result.output


@pytest.fixture
def state(tmp_path: Path) -> list[str]:
    return ["--set", f"state_dir={tmp_path / 'state'}"]


def test_config_rejects_an_unknown_model_option(state: list[str]) -> None:
    args = ["config", "--set", "model.name=sim", "--set", "model.options.serch=soft", *state]
    _assert_clean_rejection(CliRunner().invoke(main, args))


def test_train_rejects_an_unknown_model_option_before_reading_data(tmp_path: Path, state: list[str]) -> None:
    data = tmp_path / "data"  # --data must exist; it holds nothing to read
    data.mkdir()
    args = ["train", "--model", "sim", "--data", str(data), "--set", "model.options.serch=soft", *state]
    _assert_clean_rejection(CliRunner().invoke(main, args))
