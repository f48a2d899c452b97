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


def test_seqrank_config_names_the_config_when_no_flag_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("model:\n  name: din\n")
    monkeypatch.setenv("SEQRANK_CONFIG", str(mine))
    from_env = CliRunner().invoke(main, ["config"])
    assert from_env.exit_code == 0, from_env.output
    assert "name: din" in from_env.output

    packaged = tmp_path / "packaged.yaml"
    packaged.write_text("model:\n  name: emb_mlp\n")
    from_flag = CliRunner().invoke(main, ["config", "--config", str(packaged)])
    assert "name: emb_mlp" in from_flag.output  # --config wins over the environment


def test_a_missing_seqrank_config_is_a_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQRANK_CONFIG", str(tmp_path / "gone.yaml"))
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert "gone.yaml" in result.output and "Traceback" not in result.output
