"""The README and docs/*.md are tests: every fenced block runs, or is checked as its kind says.

Blocks run in one scratch directory, README first, then the docs in name order, as a new user
would type them at the repository root: `.venv`, `data/`, `docs/` and `tests/` are links to the
checkout's, `$SEQRANK_CONFIG` names a tiny config (the pipeline tests' world), so `seqrank run`
takes a minute. What the test changes in a command, and only that:
- the ports the docs use (8700 for the service, 5000 for MLflow's UI) become free ones;
- `DIR`, where the docs say "an ingest output", is the README run's ingest output;
- `make TARGET` is dry-run at the checkout (`make -n`): `make test` is this suite and `make run`
  is `seqrank run` on the default world, which the walkthrough runs on the tiny one;
- `seqrank serve` and `mlflow ui` keep running until their block ends, once they answer.
The kinds of block are in tests/helpers/docs.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from seqrank.config import DEFAULT_CONFIG, from_dict, load_config
from tests.helpers.docs import Block, blocks, commands, printed_pattern, transcript
from tests.helpers.pipeline import TINY
from tests.helpers.serving import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ALL = [block for path in DOCS for block in blocks(path)]
LINKED = ("data", "docs", "tests")
SERVERS = (re.compile(r"(^|/)seqrank serve\b"), re.compile(r"(^|/)mlflow (ui|server)\b"))
COMMAND_TIMEOUT_S = 600
READY_TIMEOUT_S = 120


def _of(kind: str) -> list[Any]:
    return [pytest.param(block, id=block.where) for block in ALL if block.kind == kind]


class Scratch:
    """The directory the docs' commands run in, its environment, and what the commands printed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.serve_port, self.mlflow_port = free_port(), free_port()
        (root / ".venv").symlink_to(Path(sys.prefix))
        for name in LINKED:
            (root / name).symlink_to(REPO / name)
        cfg = load_config(overrides=[*TINY, f"serve.port={self.serve_port}", "state_dir=.seqrank"])
        (root / "tiny.yaml").write_text(cfg.to_yaml())
        self.env = {
            **os.environ,
            "SEQRANK_CONFIG": str(root / "tiny.yaml"),
            "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.env.pop("SEQRANK_LOG_LEVEL", None)
        self.log = root / "transcript.txt"

    def command(self, text: str) -> str:
        """The command as run here (ports and `DIR` replaced)."""
        text = re.sub(r"\b8700\b", str(self.serve_port), text)
        text = re.sub(r"\b5000\b", str(self.mlflow_port), text)
        if re.search(r"\bDIR\b", text):
            text = re.sub(r"\bDIR\b", shlex.quote(str(self.ingest_output())), text)
        return text

    def ingest_output(self) -> Path:
        found = sorted(self.root.glob(".seqrank/kfp/*/ingest-step/data"))
        assert found, "no pipeline run's ingest output: the README walkthrough runs first"
        return found[-1]

    def run(self, text: str, block: Block) -> subprocess.CompletedProcess[str]:
        command = self.command(text)
        if command.startswith("make "):
            done = subprocess.run(
                ["make", "-n", *shlex.split(command)[1:]], cwd=REPO, capture_output=True, text=True
            )
        else:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=self.root,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
        self._record(command, done.returncode, done.stdout + done.stderr)
        assert done.returncode == 0, (
            f"{block.where}: `{text}` exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
        )
        return done

    def start(self, text: str, block: Block) -> subprocess.Popen[str]:
        """Start a server command and wait until it answers on its port."""
        command = self.command(text)
        out = (self.root / f"server-{len(list(self.root.glob('server-*')))}.log").open("w")
        server = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.root,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        url = (
            f"http://127.0.0.1:{self.serve_port}/readyz"
            if SERVERS[0].search(command)
            else f"http://127.0.0.1:{self.mlflow_port}/"
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if server.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        self._record(command, None, f"answering at {url}")
                        return server
            except OSError:
                time.sleep(0.5)
        stop(server)
        printed = Path(out.name).read_text()
        pytest.fail(f"{block.where}: `{text}` never answered at {url}:\n{printed[-4000:]}")

    def _record(self, command: str, code: int | None, printed: str) -> None:
        with self.log.open("a") as log:
            log.write(f"$ {command}\n{printed.rstrip()}\n[exit {code}]\n\n")


def stop(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def run_block(scratch: Scratch, block: Block) -> None:
    servers: list[subprocess.Popen[str]] = []
    try:
        for text in commands(block.text):
            if any(pattern.search(text) for pattern in SERVERS):
                servers.append(scratch.start(text, block))
            else:
                scratch.run(text, block)
    finally:
        for server in servers:
            stop(server)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scratch]:
    """The scratch directory after the README's command blocks ran in it (the walkthrough)."""
    here = Scratch(tmp_path_factory.mktemp("docs"))
    for block in blocks(REPO / "README.md"):
        if block.kind == "commands":
            run_block(here, block)
    yield here


def test_readme_walkthrough_leaves_a_champion_and_two_runs(scratch: Scratch) -> None:
    state = scratch.root / ".seqrank"
    assert (state / "serving" / "champion" / "bundle.json").is_file()
    assert len(list((state / "reports").glob("*.html"))) == 2
    printed = scratch.log.read_text()
    assert '"items"' in printed  # the curl's answer
    assert "challenger" in printed and "gate:" in printed


@pytest.mark.parametrize("block", [p for p in _of("commands") if "README" not in p.id])
def test_doc_commands_run(scratch: Scratch, block: Block) -> None:
    if block.path.name == "ingest.md":
        # The first command reads a month of logs as a site writes them: the tiny world's events.
        logs = scratch.root / "logs"
        logs.mkdir(exist_ok=True)
        events = sorted(scratch.root.glob(".seqrank/raw/generated-*/events.jsonl"))[0]
        shutil.copy(events, logs / "2026-01-01.jsonl")
    run_block(scratch, block)


@pytest.mark.parametrize("block", _of("python"))
def test_doc_python_runs(scratch: Scratch, block: Block) -> None:
    done = subprocess.run(
        [sys.executable, "-c", block.text], cwd=scratch.root, env=scratch.env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{block.where}:\n{done.stderr[-4000:]}"


@pytest.mark.parametrize("block", _of("output"))
def test_doc_output_is_what_the_command_prints(tmp_path: Path, block: Block) -> None:
    """Each `$ command` prints its documented lines, in a fresh directory with the default config."""
    env = {
        key: value for key, value in os.environ.items() if key not in ("SEQRANK_CONFIG", "SEQRANK_LOG_LEVEL")
    }
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for command, expected in transcript(block.text):
        done = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        printed = (done.stdout + done.stderr).splitlines()
        at = 0
        for line in filter(str.strip, expected):
            pattern = printed_pattern(line)
            match = next((i for i in range(at, len(printed)) if pattern.fullmatch(printed[i].strip())), None)
            assert match is not None, (
                f"{block.where}: `{command}` did not print {line!r}; printed:\n" + "\n".join(printed)
            )
            at = match + 1


def _parse_seqrank(words: list[str]) -> None:
    """Parse a seqrank command line as the CLI would, without running it (click.UsageError if wrong)."""
    import click

    from seqrank.cli import main

    command: click.Command = main
    parent = None
    args = words
    name = "seqrank"
    while True:
        ctx = command.make_context(name, args, parent=parent)
        if not isinstance(command, click.Group):
            return
        rest = [*ctx._protected_args, *ctx.args]
        name, sub, args = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        command, parent = sub, ctx


@pytest.mark.parametrize("block", [*_of("cluster"), *_of("bench")])
def test_doc_cluster_and_bench_commands_parse(block: Block) -> None:
    """Commands that need a cluster or minutes of measurement: every seqrank option exists, every
    `python -m` module lists the flags used, every make target exists."""
    checked = 0
    for text in commands(block.text):
        for part in re.split(r"\s*(?:&&|\|\|?|;)\s*", text):
            words = shlex.split(part)
            if not words:
                continue
            if Path(words[0]).name == "seqrank":
                _parse_seqrank(words[1:])
            elif words[:2] == ["python", "-m"]:
                shown = subprocess.run(
                    [sys.executable, "-m", words[2], "--help"], cwd=REPO, capture_output=True, text=True
                )
                assert shown.returncode == 0, shown.stderr
                for flag in (w.split("=")[0] for w in words[3:] if w.startswith("--")):
                    assert flag in shown.stdout, f"{block.where}: {words[2]} has no {flag}"
            elif words[0] == "make":
                assert (
                    subprocess.run(["make", "-n", *words[1:]], cwd=REPO, capture_output=True).returncode == 0
                )
            else:
                continue  # docker, kubectl, a remote mlflow server: tools of the cluster
            checked += 1
    if block.kind == "bench":
        assert checked, f"{block.where}: no seqrank, python -m or make command to check"


def _merged(base: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in fragment.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@pytest.mark.parametrize("block", _of("config"))
def test_doc_config_fragments_validate(block: Block) -> None:
    """Merged into the default config, a fragment validates (unknown keys are refused) and its
    values are the validated config's."""
    fragment = yaml.safe_load(block.text)
    cfg = from_dict(_merged(yaml.safe_load(DEFAULT_CONFIG.read_text()), fragment), block.where)
    assert fragment and _holds(cfg.model_dump(mode="json"), fragment), f"{block.where}: not what validated"


def _holds(validated: Any, fragment: Any) -> bool:
    """Every value the fragment sets is the validated config's (which adds the defaults)."""
    if isinstance(fragment, dict):
        return isinstance(validated, dict) and all(_holds(validated.get(k), v) for k, v in fragment.items())
    if isinstance(fragment, list):
        return (
            isinstance(validated, list)
            and len(validated) == len(fragment)
            and all(map(_holds, validated, fragment))
        )
    return bool(validated == fragment)


@pytest.mark.parametrize("block", _of("request"))
def test_doc_request_bodies_are_accepted(block: Block) -> None:
    from serving.app import RankRequest

    RankRequest.model_validate_json(block.text)
    assert json.loads(block.text)["candidates"]


@pytest.mark.parametrize("block", _of("layout"))
def test_doc_layout_names_what_exists(block: Block) -> None:
    for line in block.text.splitlines():
        if line and not line[0].isspace():
            assert (REPO / line.split()[0]).exists(), f"{block.where}: {line.split()[0]} does not exist"


@pytest.mark.parametrize("block", _of("state"))
def test_doc_state_layout_is_what_a_run_leaves(scratch: Scratch, block: Block) -> None:
    state = scratch.root / ".seqrank"
    for line in block.text.splitlines():
        if line.strip():
            pattern = re.sub(r"<[^>]+>", "*", line.split()[0]).rstrip("/")
            assert list(state.glob(pattern)), f"{block.where}: no {pattern} in a run's state dir"
