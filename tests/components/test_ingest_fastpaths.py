"""The ingest step's fast paths agree with the plain Arrow/pandas computation they replace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from components.ingest import dedupe, exchange, item_stats, vocab
from components.ingest.records import CLEAN, _blank, _contains_nul, _string_buffers
from components.ingest.sources import _Lines, _nonblank

TRICKY = ["a", " ", "", None, "\u00a0", " x", "\t\r", "b\x00", "\u3000\u2003", "é", "x" * 300, "\x00"]


def test_partition_files_round_trip_rows_by_key_in_order(tmp_path: Path) -> None:
    table = pa.table({"k": [3, 0, 3, 1, 0, 3], "v": ["a", "b", "c", None, "e", "f"]})
    keys = table.column("k").to_numpy()
    assert exchange.write_partitions(table, keys, 5, tmp_path / "one.arrow") == [0, 1, 3]
    assert exchange.write_partitions(table.slice(0, 1), keys[:1], 5, tmp_path / "two.arrow") == [3]
    files = [str(tmp_path / "one.arrow"), str(tmp_path / "two.arrow")]
    assert exchange.read_partition(files, 3, table.schema).column("v").to_pylist() == ["a", "c", "f", "a"]
    assert exchange.read_partition(files, 0, table.schema).column("v").to_pylist() == ["b", "e"]
    assert exchange.read_partition(files, 2, table.schema).num_rows == 0
    assert exchange.read_partition([], 2, table.schema).schema == table.schema
    empty = table.schema.empty_table()
    assert exchange.write_partitions(empty, np.zeros(0, np.int64), 5, tmp_path / "e.arrow") == []
    assert exchange.read_partition([str(tmp_path / "e.arrow")], 4, table.schema).num_rows == 0


def test_stable_hash_depends_only_on_the_value() -> None:
    values = pa.array(TRICKY)
    h = dedupe.stable_hash(values)
    assert h[TRICKY.index("")] == h[TRICKY.index(None)]  # null hashes like ""
    assert len(set(h.tolist())) == len(TRICKY) - 1
    np.testing.assert_array_equal(dedupe.stable_hash(values.slice(3, 5)), h[3:8])
    np.testing.assert_array_equal(dedupe.stable_hash(pa.chunked_array([values[:4], values[4:]])), h)
    np.testing.assert_array_equal(dedupe.stable_hash(values.cast(pa.large_string())), h)
    many = dedupe.stable_hash(pa.array([f"e{i}" for i in range(20_000)]))
    assert len(np.unique(many)) == 20_000
    # Buckets are used modulo small numbers: they must come out even.
    assert np.bincount((many % np.uint64(7)).astype(np.int64)).min() > 20_000 / 7 * 0.9


def test_id_checks_match_the_arrow_kernels() -> None:
    values = pa.array(TRICKY)
    for arr in (values, values.slice(2, 7), pa.nulls(3, pa.string()), pa.array([], pa.string())):
        offsets, data = _string_buffers(arr)
        nul = pc.fill_null(pc.match_substring(arr, "\x00"), False).to_numpy(zero_copy_only=False)
        blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0), False)
        np.testing.assert_array_equal(_contains_nul(arr, offsets, data), nul)
        np.testing.assert_array_equal(_blank(arr, offsets, data), blank.to_numpy(zero_copy_only=False))


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"a\n", b"a\nb", b"a\n\nb\n", b"\na\n", b" \na\n", b"a\n \r\n", b"a\n\n", b"a\r\n\r\nb"],
)
def test_blank_lines_found_without_splitting_clean_chunks(data: bytes) -> None:
    pieces = data.split(b"\n")
    if pieces and not pieces[-1]:
        pieces.pop()
    expected = [i for i, line in enumerate(pieces) if line and not line.isspace()]
    assert _nonblank(data, _Lines(data)) == expected


def _events(rows: list[tuple]) -> pa.Table:
    names = ["ts", "user_id", "item_id", "type", "event_id", "request_id", "position", "category_id"]
    columns = {name: [r[i] for r in rows] for i, name in enumerate(names)}
    columns["seq"] = list(range(len(rows)))
    return pa.table(columns, schema=CLEAN)


def test_dedup_is_exact_even_when_every_hash_collides(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        (1, "u1", "i1", 0, "e1", None, None, None),
        (2, "u2", "i2", 0, "e1", None, None, None),  # same event_id, other content: a copy
        (3, "u1", "i1", 0, "e2", None, None, None),
        (5, "u1", "i1", 1, None, "r1", 2, "c1"),
        (5, "u1", "i1", 1, None, "r1", 2, "c1"),  # same content without event_id: a copy
        (5, "u1", "i1", 1, None, "r1", None, "c1"),  # differs in position: not a copy
        (5, "u1", "i1", 1, None, "r1", 2, "c1"),
    ]
    unique, dropped = dedupe.dedup([_events(rows)])
    assert dropped == 3
    assert unique.column("seq").to_pylist() == [0, 2, 3, 5]
    monkeypatch.setattr(dedupe, "stable_hash", lambda arr: np.zeros(len(arr), np.uint64))
    again, dropped_again = dedupe.dedup([_events(rows)])
    assert again.equals(unique) and dropped_again == 3


def test_latest_category_and_item_day_sums_match_a_sort() -> None:
    rng = np.random.default_rng(0)
    n = 2_000
    table = pa.table(
        {
            "item_id": pa.array([f"i{k}" for k in rng.integers(0, 50, n)]),
            "category_id": pa.array([f"c{k}" for k in rng.integers(0, 9, n)]),
            "ts": pa.array(rng.integers(0, 30, n)),
            "seq": pa.array(rng.permutation(n).astype(np.int64)),
        }
    )
    got = vocab._latest_category(table).to_pandas().sort_values("item_id").reset_index(drop=True)
    frame = table.to_pandas().sort_values(["ts", "seq"])
    want = frame.groupby("item_id", as_index=False).last().sort_values("item_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want[got.columns])

    counts = pa.table(
        {
            "item": pa.array(rng.integers(1, 40, n)),
            "day": pa.array(rng.integers(20_000, 20_030, n)),
            "impressions": pa.array(rng.integers(0, 3, n)),
            "clicks": pa.array(rng.integers(0, 2, n)),
        },
        schema=item_stats.ITEM_DAYS,
    )
    merged = item_stats.merge_item_days([counts.slice(0, 700), counts.slice(700)]).to_pandas()
    want_days = counts.to_pandas().groupby(["item", "day"], as_index=False).sum()
    pd.testing.assert_frame_equal(merged.sort_values(["item", "day"]).reset_index(drop=True), want_days)
