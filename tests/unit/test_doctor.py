"""`seqrank doctor` and `seqrank --version` against this machine's real environment."""

from __future__ import annotations

import importlib.metadata
import socket
from pathlib import Path

from click.testing import CliRunner

from seqrank.cli import main
from seqrank.cli.doctor import PACKAGES


def _doctor(tmp_path: Path, port: int, *extra: str) -> tuple[int, list[str]]:
    args = ["doctor", "--set", f"state_dir={tmp_path}", "--set", f"serve.port={port}", *extra]
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout.splitlines()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_doctor_reports_every_check_and_passes_here(tmp_path: Path) -> None:
    code, lines = _doctor(tmp_path, _free_port(), "--min-free-gib", "0")
    names = [line.split()[1] for line in lines]
    assert names == ["python", "torch", "cuda", "disk", "serve", *PACKAGES]
    assert all(line.startswith("ok ") for line in lines), lines
    assert code == 0
    torch_line = lines[1]
    assert ("CPU build" in torch_line) or ("CUDA" in torch_line)


def test_doctor_fails_on_a_taken_port_and_says_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code, lines = _doctor(tmp_path, port, "--min-free-gib", "0")
    assert code == 1
    (port_line,) = [line for line in lines if line.split()[1] == "serve"]
    assert port_line.split()[0] == "problem"
    assert f"127.0.0.1:{port} is in use" in port_line and "--port" in port_line


def test_doctor_fails_when_the_disk_is_short(tmp_path: Path) -> None:
    code, lines = _doctor(tmp_path, _free_port(), "--min-free-gib", "1e12")
    assert code == 1
    (disk_line,) = [line for line in lines if line.split()[1] == "disk"]
    assert disk_line.startswith("problem ") and "free space or set state_dir elsewhere" in disk_line


def test_version_comes_from_the_package_metadata() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"seqrank {importlib.metadata.version('seqrank')}\n"


def test_shell_completion_is_clicks() -> None:
    env = {"_SEQRANK_COMPLETE": "bash_source"}
    script = CliRunner().invoke(main, [], env=env, prog_name="seqrank")
    assert script.exit_code == 0 and "_seqrank_completion()" in script.output
    env = {"_SEQRANK_COMPLETE": "bash_complete", "COMP_WORDS": "seqrank doc", "COMP_CWORD": "1"}
    words = CliRunner().invoke(main, [], env=env, prog_name="seqrank")
    assert words.output.split() == ["plain,doctor"]
