"""Backfill windows through the real Beam pipeline: consecutive windows equal one run over both."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from components import ingest
from seqrank.config import GeneratorConfig, IngestConfig
from seqrank.storage import read_table
from simulator import generate

CFG = IngestConfig()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("backfill") / "raw"
    generate(GeneratorConfig(users=120, items=150, categories=8, days=6, seed=5, start="2026-03-01"), raw)
    return raw


def _raw(table: pa.Table, vocab: Path, columns: dict[str, str]) -> pa.Table:
    """`table` with each dense-id column (list or scalar) replaced by its raw id."""
    for column, entity in columns.items():
        lookup = read_table(vocab / f"{entity}.parquet")
        raw_of = dict(zip(lookup.column("index").to_pylist(), lookup.column("raw").to_pylist(), strict=True))
        values = table.column(column).to_pylist()
        mapped = [[raw_of[v] for v in row] if isinstance(row, list) else raw_of[row] for row in values]
        table = table.set_column(table.column_names.index(column), column, pa.array(mapped))
    return table


def _sorted_rows(table: pa.Table, drop: tuple[str, ...] = ()) -> list[tuple]:
    keep = [c for c in table.column_names if c not in drop]
    return sorted(tuple(map(str, row.values())) for row in table.select(keep).to_pylist())


def _run(logs: Path, out: Path, vocab: Path, **window: str) -> dict:
    return ingest.run(
        [str(logs / "events.jsonl")],
        out,
        CFG,
        users=logs / "users.parquet",
        items=logs / "items.parquet",
        vocab_dir=vocab,
        **window,
    )


def test_two_windows_give_the_examples_and_behaviors_of_one_run(logs: Path, tmp_path: Path) -> None:
    whole = _run(logs, tmp_path / "whole", tmp_path / "vocab-whole")
    first = _run(logs, tmp_path / "first", tmp_path / "vocab", end="2026-03-04")
    second = _run(logs, tmp_path / "second", tmp_path / "vocab", start="2026-03-04")
    assert first["window"] == {"start": None, "end": "2026-03-04T00:00:00.000+00:00"}
    assert 0 < first["examples"] < whole["examples"]
    assert first["examples"] + second["examples"] == whole["examples"]
    assert first["after_window"] > 0 and second["after_window"] == 0
    assert first["read"] == first["accepted"] + sum(first["rejected"].values()) + first["duplicates"]

    ids = {"user": "user", "item": "item", "category": "category"}
    windows = pa.concat_tables(
        [
            _raw(read_table(tmp_path / name / "examples"), tmp_path / "vocab", ids)
            for name in ("first", "second")
        ]
    )
    one = _raw(read_table(tmp_path / "whole" / "examples"), tmp_path / "vocab-whole", ids)
    # The split divides each run's own time range, so it is the one column allowed to differ.
    assert _sorted_rows(windows, ("split",)) == _sorted_rows(one, ("split",))
    behaviors_second = _raw(read_table(tmp_path / "second" / "behaviors"), tmp_path / "vocab", ids)
    behaviors_one = _raw(read_table(tmp_path / "whole" / "behaviors"), tmp_path / "vocab-whole", ids)
    assert _sorted_rows(behaviors_second) == _sorted_rows(behaviors_one)
    # The first window's history stops at its end; its examples all lie before it.
    first_examples = read_table(tmp_path / "first" / "examples")
    end_ms = 1_772_582_400_000  # 2026-03-04T00:00Z
    assert pc.max(first_examples.column("ts")).as_py() < end_ms
    assert pc.max(pc.list_flatten(read_table(tmp_path / "first" / "behaviors").column("ts"))).as_py() < end_ms
    # The later run only appended to the vocab: every id keeps the index the first window gave it.
    for entity in ("user", "item", "category"):
        before = read_table(tmp_path / "first" / "vocab" / f"{entity}.parquet").sort_by("index")
        after = read_table(tmp_path / "vocab" / f"{entity}.parquet").sort_by("index")
        assert after.slice(0, before.num_rows).to_pylist() == before.to_pylist(), entity


def test_a_bad_window_is_refused_by_name(logs: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="end = '2026-02-30'"):
        _run(logs, tmp_path / "out", tmp_path / "vocab", end="2026-02-30")
    with pytest.raises(ValueError, match="must be before"):
        _run(logs, tmp_path / "out", tmp_path / "vocab", start="2026-03-04", end="2026-03-02")
    assert not (tmp_path / "out").exists() and not (tmp_path / "vocab").exists()
