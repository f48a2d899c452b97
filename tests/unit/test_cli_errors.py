"""Every user error ends in one `Error:` message and a non-zero exit, a traceback only at DEBUG."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from seqrank.cli import main
from seqrank.errors import InputNotFoundError
from tests.helpers.pipeline import TINY


def _invoke(*args: str, state: Path) -> Result:
    return CliRunner().invoke(main, [*args, "--set", f"state_dir={state}"])


def _one_error(result: Result, code: int = 1) -> str:
    """The error line of a failed command; asserts there was one, with no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TINY `seqrank generate` output ingested through the CLI (the validation failure reads it)."""
    root = tmp_path_factory.mktemp("cli-errors")
    tiny = [arg for override in [*TINY, f"state_dir={root / 'state'}"] for arg in ("--set", override)]
    for args in (["generate", "--out", str(root / "raw")], ["ingest", "--input", str(root / "raw")]):
        out = [] if args[0] == "generate" else ["--out", str(root / "clean")]
        result = CliRunner().invoke(main, [*args, *out, *tiny])
        assert result.exit_code == 0, result.output
    return root / "clean"


def test_bad_input_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    line = _one_error(
        _invoke("ingest", "--input", str(missing), "--out", str(tmp_path / "o"), state=tmp_path)
    )
    assert line == f"Error: input {str(missing)!r} matches no file"


def test_bad_input_path_in_a_subprocess_prints_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    args = ["ingest", "--input", str(missing), "--out", str(tmp_path / "o"), "--set", f"state_dir={tmp_path}"]
    proc = subprocess.run(
        [sys.executable, "-m", "seqrank.cli", *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"Error: input {str(missing)!r} matches no file"


def test_debug_keeps_the_traceback(tmp_path: Path) -> None:
    args = ["--log-level", "DEBUG", "ingest", "--input", str(tmp_path / "missing.jsonl")]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o"), "--set", f"state_dir={tmp_path}"])
    assert result.exit_code == 1
    assert isinstance(result.exception, InputNotFoundError)


def test_empty_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    line = _one_error(_invoke("ingest", "--input", str(empty), "--out", str(tmp_path / "o"), state=tmp_path))
    assert line == f"Error: the inputs hold no records ({empty} are empty): pass logs with events in them"


def test_rejected_share_over_the_threshold(tmp_path: Path) -> None:
    logs = tmp_path / "bad.jsonl"
    good = {"ts": 1_767_225_600_000, "user_id": "u1", "item_id": "i1", "event_type": "impression"}
    logs.write_text(json.dumps(good) + "\n" + "not json\n" * 9)
    out = tmp_path / "o"
    line = _one_error(_invoke("ingest", "--input", str(logs), "--out", str(out), state=tmp_path))
    assert line.startswith("Error: ingest rejected 9 of 10 records (90.0%), more than max_rejected_share")
    assert line.endswith(f"dead letters in {out / 'dead_letter'}")


def test_failed_validation(ingested: Path, tmp_path: Path) -> None:
    result = _invoke(
        "validate", "--data", str(ingested), "--set", "validate.min_examples=100000000", state=tmp_path
    )
    line = _one_error(result)
    # The headline, then one indented line per failed expectation (no traceback in between).
    assert line.startswith("Error: data validation failed: ")
    assert "min_examples" in result.stderr or "row_count" in result.stderr


def test_serve_before_any_run(tmp_path: Path, free_port: int) -> None:
    line = _one_error(_invoke("serve", "--port", str(free_port), state=tmp_path))
    champion = tmp_path / "serving" / "champion"
    assert line == f"Error: no champion yet ({champion}): run `seqrank run` first, or pass --bundle"


def test_port_in_use(tmp_path: Path, taken_port: int) -> None:
    line = _one_error(_invoke("serve", "--port", str(taken_port), state=tmp_path))
    assert line == f"Error: port {taken_port} on 127.0.0.1 is in use: stop what listens there or pass --port"


def test_unknown_model_name(tmp_path: Path) -> None:
    line = _one_error(_invoke("train", "--model", "nope", "--data", str(tmp_path), state=tmp_path))
    assert line.startswith("Error: invalid config: unknown model 'nope'; valid names: ")
    assert "din" in line


def test_bad_config_value(tmp_path: Path) -> None:
    result = _invoke("config", "--set", "train.epochs=-1", state=tmp_path)
    # The headline names the file, the lines under it each bad field and value.
    assert _one_error(result).startswith("Error: invalid config (")
    assert "train.epochs = -1" in result.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", ["train", "serve"])
def test_bench_with_an_unknown_model_is_a_usage_error(command: str) -> None:
    result = CliRunner().invoke(main, ["bench", command, "--model", "nope"])
    assert result.exit_code == 2
    assert "unknown model 'nope'; valid names: " in result.output and "sim" in result.output
    assert "Traceback" not in result.output
