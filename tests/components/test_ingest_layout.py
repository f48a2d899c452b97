"""Ingest reads a folder by its layout: a `seqrank generate` output, a folder of logs, or refuses it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from components.ingest.sources import resolve_inputs
from seqrank.cli import main
from seqrank.config import load_config
from seqrank.errors import InputError
from tests.helpers.pipeline import TINY, generated_logs


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layout") / "raw"
    generated_logs(load_config(overrides=TINY), out)
    return out


def test_generated_folder_gives_its_events_once_and_its_side_tables(raw: Path) -> None:
    resolved = resolve_inputs([str(raw)])
    assert resolved.events == [str(raw / "events.jsonl")]
    assert (resolved.users, resolved.items) == (str(raw / "users.parquet"), str(raw / "items.parquet"))
    assert resolve_inputs([str(raw)], "parquet").events == [str(raw / "events.parquet")]


def test_cli_ingest_of_generate_output_rejects_nothing(raw: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = CliRunner().invoke(
        main,
        ["ingest", "--input", str(raw), "--out", str(tmp_path / "clean"), *_tiny(state)],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    summary = json.loads((raw / "summary.json").read_text())
    # Every event read once (not twice from both events files), none rejected, no oracle rows.
    assert manifest["read"] == summary["events"] == manifest["accepted"]
    assert manifest["rejected_total"] == 0 and manifest["duplicates"] == 0
    assert [f["path"] for f in manifest["inputs"]] == [str(raw / "events.jsonl")]
    assert manifest["side_tables"]["users"]["rows"] == pq.read_metadata(raw / "users.parquet").num_rows
    assert manifest["side_tables"]["items"]["rows"] == pq.read_metadata(raw / "items.parquet").num_rows


def test_plain_folder_of_logs_reads_every_log(raw: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = (raw / "events.jsonl").read_text().splitlines(keepends=True)
    (logs / "day1.jsonl").write_text("".join(lines[: len(lines) // 2]))
    (logs / "day2.jsonl").write_text("".join(lines[len(lines) // 2 :]))
    shutil.copy(raw / "events.parquet", logs / "day3.parquet")
    (logs / "README").write_text("not a log: no log extension, so not read")
    resolved = resolve_inputs([str(logs)])
    assert resolved.events == [str(logs / name) for name in ("day1.jsonl", "day2.jsonl", "day3.parquet")]
    assert resolved.users is None and resolved.items is None


def test_mixed_folder_is_refused_naming_what_to_pass(raw: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("events.jsonl", "users.parquet", "summary.json"):
        shutil.copy(raw / name, mixed / name)
    with pytest.raises(
        InputError, match=r"mixes event logs with other files \(summary\.json, users\.parquet\)"
    ):
        resolve_inputs([str(mixed)])


def test_folder_without_logs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="holds no event log"):
        resolve_inputs([str(tmp_path)])


def test_two_generated_folders_are_refused(raw: Path, tmp_path: Path) -> None:
    other = tmp_path / "raw2"
    shutil.copytree(raw, other)
    with pytest.raises(InputError, match="one at a time"):
        resolve_inputs([str(raw), str(other)])


def _tiny(state: Path) -> list[str]:
    return [arg for override in [*TINY, f"state_dir={state}"] for arg in ("--set", override)]
