"""Bulk online writes: the direct Arrow -> proto path stores exactly what Feast's own ingestion stores."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers.feature_store import CFG, N_CATEGORIES, feast_ingested_store, make_ingest_dir, online_rows


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, list[tuple[str, int]]]:
    """The same tables written online twice: by the features step, and batch by batch via Feast's
    `write_to_online_store` (DataFrame ingestion) into a second store."""
    from components import features

    root = tmp_path_factory.mktemp("online_write")
    ingest = make_ingest_dir(root / "ingest")
    ours = root / "ours"
    chunks: list[tuple[str, int]] = []
    summary = features.run(ingest, ours, CFG, on_chunk=lambda stage, rows: chunks.append((stage, rows)))
    reference = feast_ingested_store(ingest, root / "reference")
    return ours, reference, summary, chunks


@pytest.mark.parametrize(
    "view", ["user_behavior", "user_category_behavior", "item_profile", "user_profile", "item_stats"]
)
def test_rows_are_byte_identical_to_feast_ingestion(stores, view):
    ours, reference, _, _ = stores
    rows = online_rows(ours, view)
    assert rows, view
    assert rows == online_rows(reference, view)


def test_every_chunk_is_bounded_and_all_rows_are_written(stores):
    from feature_repo import VIEWS

    ours, _, summary, chunks = stores
    assert chunks
    for stage, rows in chunks:
        # A chunk of users yields up to one (user, category) row per category it touches; those
        # rows go online as they are built.
        fan_out = N_CATEGORIES if stage.endswith(" user_category_behavior") else 1
        assert 0 < rows <= CFG.materialize_chunk_users * fan_out, stage
    # Behaviors are read in several chunks (12 users, 5 per chunk), not in one piece.
    assert sum(stage == "table user_behavior" for stage, _ in chunks) >= 3
    for view in VIEWS:
        assert sum(rows for stage, rows in chunks if stage == f"table {view}") == summary["rows"][view]
        written = sum(rows for stage, rows in chunks if stage == f"online {view}")
        assert written == len({key for key, *_ in online_rows(ours, view)}), view


def test_online_store_journals_with_wal(stores):
    ours, *_ = stores
    with contextlib.closing(sqlite3.connect(ours / "online.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_nulls_become_empty_values():
    from components.features.online import to_values

    values = to_values(pa.array(["f", None], type=pa.string()))
    assert values[0].string_val == "f"
    assert values[1].WhichOneof("val") is None
    lists = to_values(pa.array([[1, 2], None, []], type=pa.list_(pa.int64())))
    assert list(lists[0].int64_list_val.val) == [1, 2]
    assert lists[1].WhichOneof("val") is None
    assert lists[2].WhichOneof("val") == "int64_list_val" and not lists[2].int64_list_val.val


def test_sliced_list_columns_keep_their_rows():
    from components.features.online import to_values

    column = pa.array([[1], [2, 3], [4, 5, 6]], type=pa.list_(pa.int64())).slice(1)
    assert [list(v.int64_list_val.val) for v in to_values(column)] == [[2, 3], [4, 5, 6]]


def test_unknown_arrow_type_is_named():
    from components.features.online import to_values

    with pytest.raises(TypeError, match="bool"):
        to_values(pa.array([True]))


def test_read_bounded_caps_batch_bytes_across_row_groups(tmp_path):
    from components.features.online import read_bounded

    n, length = 300, 1_000
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * length)
    table = pa.table({"seq": pa.ListArray.from_arrays(offsets, pa.array(np.arange(n * length)))})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=100)  # 100 rows of ~8 KB per row group
    batches = list(read_bounded(path, max_rows=10_000, max_bytes=200_000))
    assert sum(b.num_rows for b in batches) == n
    assert max(b.nbytes for b in batches) <= 200_000 + 8 * length + 8
    assert pa.Table.from_batches(batches).equals(table)


def _schema(feast_dir: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(feast_dir / "online.db")) as conn:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE '%__held%' ORDER BY name"
        ).fetchall()


def test_bulk_load_keeps_feasts_schema(stores):
    # Tables and indexes exactly as Feast's `update` creates them (the entity_key index is
    # dropped for a load and built again at its end; the primary-key index stays throughout).
    ours, reference, _, _ = stores
    assert _schema(ours) == _schema(reference)


def test_a_load_cut_short_rolls_back_and_the_next_run_completes_it(tmp_path, stores):
    from components import features
    from feature_repo import VIEWS

    _, reference, _, _ = stores
    ingest = make_ingest_dir(tmp_path / "ingest")

    def fail_midway(stage: str, rows: int) -> None:
        if stage == "online user_category_behavior":
            raise RuntimeError("cut short")

    with pytest.raises(RuntimeError, match="cut short"):
        features.run(ingest, tmp_path / "feast", CFG, on_chunk=fail_midway)
    # The load is one transaction: nothing of it, rows or holdings, reached the file, and the
    # tables keep Feast's schema.
    assert online_rows(tmp_path / "feast", "user_behavior") == []
    assert _schema(tmp_path / "feast") == _schema(reference)
    features.run(ingest, tmp_path / "feast", CFG)
    for view in VIEWS:
        assert online_rows(tmp_path / "feast", view) == online_rows(reference, view), view


_DIE_MIDWAY = """
import os, sys
from pathlib import Path
from components import features
from tests.helpers.feature_store import CFG

def die(stage, rows):
    if stage == "online user_category_behavior":
        os._exit(3)  # a crash: no rollback, no cleanup, pages of the load already in the file

features.run(Path(sys.argv[1]), Path(sys.argv[2]), CFG, on_chunk=die)
"""


def test_a_new_store_is_marked_while_its_first_run_fills_it_and_journals_with_wal_after(tmp_path):
    from components import features
    from feature_repo.bulk import first_load_marker

    ingest = make_ingest_dir(tmp_path / "ingest")
    db = tmp_path / "feast" / "online.db"
    marked = []
    features.run(
        ingest,
        tmp_path / "feast",
        CFG,
        on_chunk=lambda stage, rows: marked.append(first_load_marker(db).exists()),
    )
    assert marked and all(marked)
    assert not first_load_marker(db).exists()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # A second run finds a store in use: no marker, written through the WAL.
    marked.clear()
    features.run(
        ingest,
        tmp_path / "feast",
        CFG,
        on_chunk=lambda stage, rows: marked.append(first_load_marker(db).exists()),
    )
    assert marked and not any(marked)


def test_a_process_dying_while_filling_a_new_store_leaves_it_marked_and_the_next_run_starts_it_again(
    tmp_path, stores
):
    from components import features
    from feature_repo import VIEWS
    from feature_repo.bulk import first_load_marker

    _, reference, _, _ = stores
    ingest = make_ingest_dir(tmp_path / "ingest")
    feast_dir = tmp_path / "feast"
    root = Path(__file__).resolve().parents[2]
    died = subprocess.run(
        [sys.executable, "-c", _DIE_MIDWAY, str(ingest), str(feast_dir)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert died.returncode == 3, died.stderr
    assert first_load_marker(feast_dir / "online.db").exists()
    summary = features.run(ingest, feast_dir, CFG)
    assert not first_load_marker(feast_dir / "online.db").exists()
    assert summary["written_users"] == summary["users"]  # all of it, from a new file
    for view in VIEWS:
        assert online_rows(feast_dir, view) == online_rows(reference, view), view
    with contextlib.closing(sqlite3.connect(feast_dir / "online.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_write_failing_on_the_writer_thread_fails_the_run_and_rolls_it_back(tmp_path, stores, monkeypatch):
    from components import features
    from feature_repo import VIEWS, bulk

    _, reference, _, _ = stores
    ingest = make_ingest_dir(tmp_path / "ingest")
    real_write = bulk.SqliteBulk.write
    writes = []

    def fail_on_the_third(self, view, rows, hold=True):  # type: ignore[no-untyped-def]
        writes.append(threading.current_thread().name)
        if len(writes) == 3:
            raise sqlite3.OperationalError("disk I/O error")
        real_write(self, view, rows, hold)

    monkeypatch.setattr(bulk.SqliteBulk, "write", fail_on_the_third)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        features.run(ingest, tmp_path / "feast", CFG)
    assert all(name.startswith("seqrank-online-write") for name in writes)  # off the caller's thread
    assert online_rows(tmp_path / "feast", "user_behavior") == []
    monkeypatch.setattr(bulk.SqliteBulk, "write", real_write)
    features.run(ingest, tmp_path / "feast", CFG)
    for view in VIEWS:
        assert online_rows(tmp_path / "feast", view) == online_rows(reference, view), view


def test_the_writer_raises_a_failed_write_at_the_next_call():
    from components.features.online import Writer

    class Failing:
        def __init__(self) -> None:
            self.calls = 0

        def write(self, view, rows):  # type: ignore[no-untyped-def]
            self.calls += 1
            raise ValueError(f"write {self.calls} of {view} failed")

    writer = Writer(Failing())  # type: ignore[arg-type]
    writer.write("user_behavior", None)  # type: ignore[arg-type]  # returns: the write runs on its thread
    with pytest.raises(ValueError, match="write 1 of user_behavior failed"):
        writer.wait()
    writer.wait()  # raised once, then nothing is in flight
    writer.write("item_stats", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="write 2 of item_stats failed"):
        writer.write("item_stats", None)  # type: ignore[arg-type]
    writer.close()


def test_a_load_committed_in_parts_equals_one_committed_at_the_end(tmp_path, stores, monkeypatch):
    from components import features
    from feature_repo import VIEWS, bulk

    _, reference, _, _ = stores
    # Every write passes the threshold: the load commits after each and opens a new transaction.
    monkeypatch.setattr(bulk, "_LOAD_COMMIT_BYTES", 1)
    features.run(make_ingest_dir(tmp_path / "ingest"), tmp_path / "feast", CFG)
    assert _schema(tmp_path / "feast") == _schema(reference)
    for view in VIEWS:
        assert online_rows(tmp_path / "feast", view) == online_rows(reference, view), view
