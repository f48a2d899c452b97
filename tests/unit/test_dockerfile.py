"""The image, checked statically (no Docker engine here): pins, Python, contents, entry point, bind address."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from seqrank.config import SERVE_HOST_ENV, ServeConfig, from_dict, load_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"
# The base named for the CUDA build in the Dockerfile's header; 22.04 bases would ship 3.10.
CUDA_BASE = re.compile(r"--build-arg BASE=(nvidia/cuda:\S+-ubuntu24\.04)")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    heredoc: str = ""


def _instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, heredoc bodies kept apart."""
    out: list[Instruction] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        keyword, _, args = line.strip().partition(" ")
        body = ""
        marker = re.search(r"<<-?'?(\w+)'?", args)
        if marker:
            heredoc = []
            for inner in lines:
                if inner.strip() == marker.group(1):
                    break
                heredoc.append(inner)
            body = "\n".join(heredoc) + "\n"
        out.append(Instruction(keyword.upper(), args, body))
    return out


INSTRUCTIONS = _instructions(DOCKERFILE.read_text())
# The final stage: what the image is. Earlier stages only lend files (uv, Beam's boot program).
FINAL = INSTRUCTIONS[max(i for i, ins in enumerate(INSTRUCTIONS) if ins.keyword == "FROM") :]


def _args() -> dict[str, str]:
    found = {}
    for ins in INSTRUCTIONS:
        if ins.keyword == "ARG" and "=" in ins.args:
            name, _, value = ins.args.partition("=")
            found[name] = value
    return found


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements.lock line {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def _shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN line (split on &&, ||, ;), as argument lists."""
    tokens = shlex.split(run.replace("&&", " ; ").replace("||", " ; "))
    commands, current = [], []
    for token in [*tokens, ";"]:
        if token == ";":
            if current:
                commands.append(current)
            current = []
        else:
            current.append(token)
    return commands


def _pip_installs() -> list[list[str]]:
    installs = []
    for ins in FINAL:
        if ins.keyword != "RUN":
            continue
        for command in _shell_commands(ins.args):
            if command[:2] == ["pip", "install"] or command[1:3] == ["-m", "pip"]:
                installs.append(command[command.index("install") + 1 :])
    return installs


def _split_install(args: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(options with a value, flags, requirement arguments) of one `pip install`."""
    valued = {"-c", "--constraint", "-r", "--requirement", "--index-url", "-i", "--extra-index-url"}
    options, flags, requirements = {}, [], []
    it = iter(args)
    for arg in it:
        if arg in valued:
            options[arg] = next(it)
        elif arg.startswith("-"):
            flags.append(arg)
        else:
            requirements.append(arg)
    return options, flags, requirements


def test_every_pip_install_is_pinned_as_in_the_lock() -> None:
    lock = _lock()
    installs = _pip_installs()
    assert len(installs) == 2, installs
    for args in installs:
        options, _, requirements = _split_install(args)
        assert "-r" not in options and "--requirement" not in options, args
        for spec in requirements:
            if spec == ".":
                # The project and everything it pulls in, held to the lock.
                assert options.get("-c", options.get("--constraint")) == "requirements.lock", args
                continue
            req = Requirement(spec)
            pinned = [s.version for s in req.specifier if s.operator == "=="]
            assert pinned, f"{spec!r} in the Dockerfile is not an exact pin"
            name = canonicalize_name(req.name)
            assert lock.get(name) == pinned[0], f"Dockerfile pins {spec}, requirements.lock {lock.get(name)}"
    # torch is installed alone, from the index of the wanted build, at the lock's version.
    (torch_args,) = [a for a in installs if any(r.startswith("torch==") for r in _split_install(a)[2])]
    options, flags, requirements = _split_install(torch_args)
    assert requirements == [f"torch=={lock['torch']}"]
    assert options["--index-url"] == "${TORCH_INDEX}" and "--no-deps" in flags
    assert _args()["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    # The project is installed once every directory from the build context is in, then checked.
    (project,) = [
        i for i, ins in enumerate(FINAL) if ins.keyword == "RUN" and "-c requirements.lock ." in ins.args
    ]
    assert all(i < project for i, ins in enumerate(FINAL) if ins in _context_copy_instructions())
    assert "pip check" in FINAL[project].args


def test_the_project_pins_agree_with_the_lock() -> None:
    lock = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    for spec in deps:
        req = Requirement(spec)
        (pin,) = [s.version for s in req.specifier if s.operator == "=="]
        assert lock.get(canonicalize_name(req.name)) == pin, f"pyproject {spec} vs lock"


def test_beam_boot_program_comes_from_the_pinned_beam_release() -> None:
    image = _args()["BEAM_SDK_IMAGE"]
    assert image == f"apache/beam_python3.11_sdk:{_lock()['apache-beam']}"
    copies = [ins.args for ins in FINAL if ins.keyword == "COPY" and "--from=beam" in ins.args]
    assert copies == ["--from=beam /opt/apache/beam /opt/apache/beam"]


def test_python_is_the_same_pinned_3_11_on_the_cpu_and_the_cuda_base() -> None:
    args = _args()
    version = args["PYTHON_VERSION"]
    assert re.fullmatch(r"3\.11\.\d+", version), version
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(version)
    # Both documented bases are plain Ubuntu 24.04 (Python 3.12, or none): the interpreter cannot
    # come from the base, and the final stage starts from whichever BASE is given.
    assert args["BASE"] == "ubuntu:24.04"
    assert CUDA_BASE.search(DOCKERFILE.read_text()), "the CUDA build example should name an ubuntu24.04 base"
    assert FINAL[0].args == "${BASE}"
    # The venv is made from the uv-installed PYTHON_VERSION, the build asserts the exact version, and
    # nothing installs a Python from apt.
    (venv,) = [ins.args for ins in FINAL if ins.keyword == "RUN" and "-m venv /opt/venv" in ins.args]
    assert 'uv python install --no-bin "${PYTHON_VERSION}"' in venv
    assert '"$(uv python find --managed-python "${PYTHON_VERSION}")" -m venv /opt/venv' in venv
    assert "platform.python_version() == sys.argv[1]" in venv and venv.rstrip().endswith(
        '"${PYTHON_VERSION}"'
    )
    for ins in FINAL:
        if ins.keyword == "RUN" and "apt-get install" in ins.args:
            assert "python" not in ins.args, ins.args
    assert any(ins.keyword == "ENV" and ins.args.startswith("PATH=/opt/venv/bin:") for ins in FINAL)
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", args["UV_IMAGE"])


def _context_copy_instructions() -> list[Instruction]:
    """COPY instructions that read the build context (not another stage, not a heredoc)."""
    return [ins for ins in FINAL if ins.keyword == "COPY" and "--from" not in ins.args and not ins.heredoc]


def _context_copies() -> list[str]:
    sources = []
    for ins in _context_copy_instructions():
        *srcs, _dest = ins.args.split()
        sources.extend(srcs)
    return sources


def test_every_package_and_benchmarks_are_copied_and_let_through_dockerignore() -> None:
    copied = set(_context_copies())
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert pattern.rstrip("*") in copied, f"{pattern} is installed but not copied into the image"
    assert "benchmarks" in copied
    for source in copied:
        assert (ROOT / source).exists(), source
    # .dockerignore is an allowlist: everything out, then each copied path back in.
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()]
    rules = [line for line in lines if not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:] for rule in rules if rule.startswith("!")}
    assert copied <= allowed, copied - allowed
    assert not allowed & {".venv", ".seqrank", ".git", "tests", "data"}


def test_the_entry_point_sends_beam_worker_flags_to_beam_and_the_rest_to_seqrank(tmp_path: Path) -> None:
    (script,) = [ins for ins in FINAL if ins.keyword == "COPY" and ins.heredoc]
    assert script.args.endswith("/usr/local/bin/seqrank-entrypoint")
    (entry,) = [ins.args for ins in FINAL if ins.keyword == "ENTRYPOINT"]
    assert entry == '["/usr/local/bin/seqrank-entrypoint"]'
    body = script.heredoc.replace("exec /opt/apache/beam/boot", "echo beam").replace(
        "exec seqrank", "echo seqrank"
    )
    assert body != script.heredoc
    path = tmp_path / "entrypoint"
    path.write_text(body)

    def target(*argv: str) -> str:
        done = subprocess.run(["sh", str(path), *argv], check=True, capture_output=True, text=True)
        return done.stdout.split()[0]

    # What Beam's Docker environment and Dataflow pass, and a worker-pool sidecar.
    assert target("--id=1-1", "--logging_endpoint=localhost:1", "--control_endpoint=localhost:2") == "beam"
    assert target("--worker_pool") == "beam"
    assert target("--semi_persist_dir=/tmp") == "beam"
    for argv in (["serve"], ["--help"], ["--log-level=DEBUG", "serve"], []):
        assert target(*argv) == "seqrank", argv


def test_the_image_runs_as_a_non_root_user_and_exposes_the_service_port() -> None:
    users = [ins.args for ins in FINAL if ins.keyword == "USER"]
    assert users == ["10001:10001"]  # numeric: Kubernetes checks runAsNonRoot against it
    assert any(
        "useradd" in ins.args and "--uid 10001 --gid 10001" in ins.args
        for ins in FINAL
        if ins.keyword == "RUN"
    )
    (exposed,) = [ins.args for ins in FINAL if ins.keyword == "EXPOSE"]
    assert int(exposed) == ServeConfig().port
    env = " ".join(ins.args for ins in FINAL if ins.keyword == "ENV")
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false" in env


def test_the_image_binds_every_interface_through_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    env = [ins.args for ins in FINAL if ins.keyword == "ENV" and ins.args.startswith(SERVE_HOST_ENV)]
    assert env == [f"{SERVE_HOST_ENV}=0.0.0.0"]
    monkeypatch.delenv(SERVE_HOST_ENV, raising=False)
    assert load_config().serve.host == "127.0.0.1"  # the laptop: loopback
    assert load_config(overrides=["serve.host=10.1.2.3"]).serve.host == "10.1.2.3"
    monkeypatch.setenv(SERVE_HOST_ENV, "0.0.0.0")
    # The packaged config says 127.0.0.1; inside the image the variable wins, with or without a
    # serve section, and whatever the file or an override say.
    assert load_config().serve.host == "0.0.0.0"
    assert load_config(overrides=["serve.host=127.0.0.1", "serve.port=9000"]).serve.host == "0.0.0.0"
    assert ServeConfig().host == "0.0.0.0"
    assert from_dict({}).serve.host == "0.0.0.0"
    monkeypatch.setenv(SERVE_HOST_ENV, "")
    assert load_config().serve.host == "127.0.0.1"  # empty means unset
