"""The layer contracts of docs/architecture.md, checked by import-linter from pyproject.toml."""

from __future__ import annotations

import ast
import subprocess
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter import api
from importlinter.contracts.forbidden import ForbiddenContract

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def _contract(contract_id: str) -> tuple[ForbiddenContract, dict[str, Any]]:
    config = api.read_configuration(str(PYPROJECT))
    (options,) = [c for c in config["contracts_options"] if c.get("id") == contract_id]
    contract = ForbiddenContract(
        name=options["name"], session_options=config["session_options"], contract_options=options
    )
    return contract, config["session_options"]


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--config", str(PYPROJECT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    _, session = _contract("core")
    return grimp.build_graph(*session["root_packages"], include_external_packages=True, cache_dir=None)


def test_lazy_imports_are_in_the_graph(graph: grimp.ImportGraph) -> None:
    # `seqrank run` imports the pipeline inside the command function; the contracts still see it.
    (detail,) = graph.get_import_details(importer="seqrank.cli.pipeline", imported="pipelines.local")
    assert detail["line_contents"] == "from pipelines.local import run_local"


def test_a_wrong_way_import_breaks_the_core_contract(graph: grimp.ImportGraph) -> None:
    contract, _ = _contract("core")
    assert contract.check(deepcopy(graph), verbose=False).kept
    broken = deepcopy(graph)
    broken.add_import(
        importer="seqrank.storage",
        imported="training.trainer",
        line_number=3,
        line_contents="from training.trainer import fit",
    )
    check = contract.check(broken, verbose=False)
    assert not check.kept
    chains = [
        link
        for violation in check.metadata["invalid_chains"]
        for chain in violation["chains"]
        for link in chain
    ]
    assert {"importer": "seqrank.storage", "imported": "training.trainer", "line_numbers": (3,)} in chains


def test_no_test_module_imports_another() -> None:
    # Shared builders live in tests/helpers/ and fixtures in conftest.py, so a test module can be
    # read, moved or deleted on its own.
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted(root.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [
                f"{path.relative_to(root)}:{node.lineno} imports {name}"
                for name in names
                if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")
            ]
    assert not offenders, "\n".join(offenders)


def test_the_feature_repo_names_come_without_importing_feast() -> None:
    """The deploy step and rollback name views and the store config; `import feast` is seconds of
    each step's start, so `feature_repo` resolves its names on first use, each from its module."""
    code = (
        "import sys\n"
        "import components.deploy.export, components.deploy.releases\n"
        "import feature_repo\n"
        "assert feature_repo.SERVICES['sim_v2'][0] == feature_repo.USER_BEHAVIOR\n"
        "assert 'feast' not in sys.modules, 'feast was imported'\n"
        "missing = [n for n in feature_repo.__all__ if not hasattr(feature_repo, n)]\n"
        "assert not missing, missing\n"
        "assert feature_repo.definitions.__module__ == 'feature_repo.views'\n"
        "assert 'feast' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import feature_repo

        _ = feature_repo.nothing
