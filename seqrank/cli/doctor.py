"""`seqrank doctor`: check the environment a first run needs, one line per check with what to do."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from seqrank.cli.common import CONFIG_HELP, SET_HELP, cli_config, port_free
from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths

# The stack's packages by import name, with the distribution that provides each (for its version).
PACKAGES = {
    "feast": "feast",
    "mlflow": "mlflow",
    "kfp": "kfp",
    "apache_beam": "apache-beam",
    "great_expectations": "great-expectations",
    "onnxruntime": "onnxruntime",
}
PYTHON = (3, 11)  # pyproject's requires-python


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report: ok or not, what was found, and what to do when not ok."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'problem':<8} {self.name:<20} {self.detail}"


def check_python() -> Check:
    found = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] == PYTHON:
        return Check("python", True, found)
    want = ".".join(map(str, PYTHON))
    return Check("python", False, f"{found}: seqrank needs Python {want}; make the venv with python{want}")


def check_torch(cfg: PipelineConfig) -> list[Check]:
    """The torch build, and CUDA where the config or the build asks for it."""
    try:
        import torch
    except ImportError as err:
        fix = f"cannot import torch ({err}): reinstall the project (`pip install -e .`)"
        return [Check("torch", False, fix), Check("cuda", False, "unknown without torch")]
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    checks = [Check("torch", True, f"{torch.__version__} ({build} build)")]
    available = torch.cuda.is_available()
    device = cfg.train.device
    if available:
        checks.append(Check("cuda", True, f"available: {torch.cuda.get_device_name(0)}"))
    elif device == "cuda":
        fix = "no CUDA device" + ("" if torch.version.cuda else " (torch is a CPU build)")
        checks.append(Check("cuda", False, f"{fix} but train.device=cuda: set train.device=auto or cpu"))
    else:
        # On a laptop without a GPU this is how it should be: train.device=auto trains on the CPU.
        checks.append(Check("cuda", True, f"not available; train.device={device} trains on the CPU"))
    return checks


def check_disk(state_dir: Path, min_free_gib: float) -> Check:
    """Free space where the state dir is (or would be created)."""
    at = state_dir
    while not at.exists() and at != at.parent:
        at = at.parent
    free_gib = shutil.disk_usage(at).free / 2**30
    detail = f"{free_gib:.1f} GiB free under {state_dir}"
    if free_gib >= min_free_gib:
        return Check("disk", True, detail)
    return Check(
        "disk", False, f"{detail}, under {min_free_gib:g} GiB: free space or set state_dir elsewhere"
    )


def check_port(host: str, port: int) -> Check:
    if port_free(host, port):
        return Check("serve port", True, f"{host}:{port} is free")
    return Check(
        "serve port",
        False,
        f"{host}:{port} is in use: stop what listens there, or serve with --port (serve.port)",
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the warnings libraries log while importing (Beam's apitools, GX's deprecations)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def check_package(module: str, distribution: str) -> Check:
    try:
        with _quiet():
            importlib.import_module(module)
    except Exception as err:  # a broken install raises anything; the report says which
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        return Check(module, False, f"cannot import ({reason}): reinstall the project (`pip install -e .`)")
    return Check(module, True, importlib.metadata.version(distribution))


def run_checks(cfg: PipelineConfig, min_free_gib: float) -> Iterator[Check]:
    """The checks in report order, each run as it is reached, so its line prints as soon as known."""
    yield check_python()
    yield from check_torch(cfg)
    yield check_disk(StatePaths.of(cfg).root, min_free_gib)
    yield check_port(cfg.serve.host, cfg.serve.port)
    for module, distribution in PACKAGES.items():
        yield check_package(module, distribution)


@click.command()
@click.option(
    "--min-free-gib",
    type=float,
    default=5.0,
    show_default=True,
    help="Free disk under the state dir below which the disk check fails.",
)
@click.option("--config", type=click.Path(exists=True), help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, help=SET_HELP)
@click.pass_context
def doctor(ctx: click.Context, min_free_gib: float, config, overrides) -> None:
    """Check Python, torch and CUDA, disk, the serve port and the stack's packages; exit 1 on a problem."""
    cfg = cli_config(config, overrides)
    problems = 0
    for check in run_checks(cfg, min_free_gib):
        click.echo(check.line())
        problems += not check.ok
    if problems:
        click.echo(f"{problems} problem(s)", err=True)
        ctx.exit(1)
