"""Tests of the Beam ingest step: bad input, reconciliation, labels, history, sessions, vocab."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.bench_ingest import make_events, write_events
from components import ingest
from components.ingest import IngestRejectedError, pipeline, sources
from seqrank.config import IngestConfig
from seqrank.schema import BEHAVIOR_TYPE_CODE, BEHAVIORS, EXAMPLES, ITEM_STATS, ITEMS, USERS, VOCAB
from seqrank.storage import read_table

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
LOOSE = IngestConfig(max_rejected_share=1.0)


def ev(ts: Any, user: Any = "u1", item: Any = "i1", kind: Any = "impression", **extra: Any) -> dict:
    return {"ts": ts, "user_id": user, "item_id": item, "event_type": kind, **extra}


GOOD = [
    ev(T0, "u1", "i1", request_id="r1", position=0),
    ev(T0 + 1_000, "u1", "i1", "click", request_id="r1"),
    ev(T0 + 2_000, "u2", "i2", position=3),
]


def write_jsonl(path: Path, records: list[dict | str | bytes]) -> Path:
    with open(path, "wb") as f:
        for record in records:
            if isinstance(record, dict):
                record = json.dumps(record)
            if isinstance(record, str):
                record = record.encode()
            f.write(record + b"\n")
    return path


def ingest_lines(
    tmp_path: Path, records: list[dict | str | bytes], cfg: IngestConfig = LOOSE, **kwargs: Any
) -> tuple[dict, Path]:
    src = write_jsonl(tmp_path / "events.jsonl", records)
    out = tmp_path / "out"
    return ingest.run([str(src)], out, cfg, **kwargs), out


def dead_letters(out: Path) -> list[dict]:
    rows = []
    for path in sorted((out / "dead_letter").glob("*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines())
    return rows


def assert_reconciles(manifest: dict) -> None:
    rejected = sum(manifest["rejected"].values())
    assert manifest["read"] == manifest["accepted"] + rejected + manifest["duplicates"]
    assert manifest["rejected_total"] == rejected


def examples(out: Path) -> list[dict]:
    return read_table(out / "examples", EXAMPLES).to_pylist()


def vocab(out: Path, entity: str) -> dict[str, int]:
    return vocab_file(out / "vocab", entity)


def vocab_file(directory: Path, entity: str) -> dict[str, int]:
    table = read_table(directory / f"{entity}.parquet", VOCAB)
    return dict(zip(table.column("raw").to_pylist(), table.column("index").to_pylist(), strict=True))


# ---- one test per kind of bad input -------------------------------------------------------------

BAD_CASES = {
    "malformed": ["not json", '{"ts": 1767225600000, "user_id": "u1"', "[1, 2]", '{"ts": 1} {"ts": 2}'],
    "missing_field": [
        {"user_id": "u1", "item_id": "i1", "event_type": "click"},
        ev(T0, user=None),
        {"ts": T0, "user_id": "u1", "event_type": "click"},
        {"ts": T0, "user_id": "u1", "item_id": "i1"},
    ],
    "wrong_type": [
        ev(True),
        ev(1.767e12),
        ev(T0, user=["u1"]),
        ev(T0, item={"a": 1}),
        ev(T0, position="first"),
    ],
    "bad_timestamp": [ev("yesterday"), ev("2026-13-45T00:00:00Z")],
    "ts_before_2000": [ev(946_684_799_999), ev("1999-12-31T23:59:59Z")],
    "ts_in_future": [ev(int(time.time() * 1000) + 2 * 86_400_000)],
    "unknown_event_type": [ev(T0, kind="view"), ev(T0, kind="Click")],
    "empty_id": [ev(T0, user=""), ev(T0, item="   ")],
    "oversized_id": [ev(T0, user="u" * 257), ev(T0, event_id="e" * 300)],
    "invalid_utf8": [b'{"ts": 1767225600000, "user_id": "\xff\xfe", "item_id": "i1", "event_type": "click"}'],
    "nul_byte": [
        b'{"ts": 1767225600000, "user_id": "u\x001", "item_id": "i1", "event_type": "click"}',
        '{"ts": 1767225600000, "user_id": "u1\\u0000", "item_id": "i1", "event_type": "click"}',
    ],
    "negative_position": [ev(T0, position=-1)],
}


@pytest.mark.parametrize("reason", sorted(BAD_CASES))
def test_bad_records_go_to_dead_letter_with_reason(tmp_path: Path, reason: str) -> None:
    bad = BAD_CASES[reason]
    manifest, out = ingest_lines(tmp_path, [*GOOD, *bad])

    assert manifest["read"] == len(GOOD) + len(bad)
    assert manifest["accepted"] == len(GOOD)
    assert manifest["rejected"] == {reason: len(bad)}
    assert manifest["duplicates"] == 0
    assert_reconciles(manifest)
    rows = dead_letters(out)
    assert [r["reason"] for r in rows] == [reason] * len(bad)
    assert [r["line"] for r in rows] == list(range(len(GOOD) + 1, len(GOOD) + len(bad) + 1))
    assert all(r["source"] == str(tmp_path / "events.jsonl") for r in rows)
    lines = (tmp_path / "events.jsonl").read_bytes().split(b"\n")
    for row in rows:
        assert row["record"] == lines[row["line"] - 1].decode("utf-8", errors="backslashreplace")


def test_dead_letter_names_the_field(tmp_path: Path) -> None:
    _, out = ingest_lines(tmp_path, [*GOOD, ev(T0, user=None), ev(T0, position="x"), ev("soon")])
    assert [(r["reason"], r["field"]) for r in dead_letters(out)] == [
        ("missing_field", "user_id"),
        ("wrong_type", "position"),
        ("bad_timestamp", "ts"),
    ]


def test_boundary_values_are_accepted(tmp_path: Path) -> None:
    ok = [
        ev(946_684_800_000, user="u" * 256),  # exactly 2000-01-01, an id of exactly 256 bytes
        ev("2026-01-01T02:00:00+02:00", position=0),  # ISO with offset: 00:00Z
        ev(str(T0), user=42, item="i9", request_id=""),  # digits string ts, integer id, empty optional id
    ]
    manifest, out = ingest_lines(tmp_path, ok)
    assert manifest["rejected"] == {}
    assert manifest["accepted"] == 3
    rows = examples(out)
    assert sorted(r["ts"] for r in rows) == [946_684_800_000, T0, T0]
    assert "42" in vocab(out, "user")
    assert all(r["request_id"] is None for r in rows)


def test_malformed_csv_lines(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_text(
        "ts,user_id,item_id,event_type,request_id,position\n"
        f"{T0},u1,i1,impression,r1,0\n"
        f'{T0 + 1},u1,"i,1",impression,r1,1\n'
        f"{T0 + 2},u1,i1,impression,r1,2,extra\n"
        f"{T0 + 3},u1,i1\n"
        f'{T0 + 4},u1,"i1,impression,r1,3\n'
        f"{T0 + 5},u2,i2,click,,\n"
        f'{T0 + 6},u2,"i"2,click,,\n'
        f'{T0 + 7},u2,"i""3",click,,3.0\n'
    )
    manifest = ingest.run([str(src)], tmp_path / "out", LOOSE)
    assert manifest["read"] == 8
    assert manifest["rejected"] == {"malformed": 4}
    assert manifest["accepted"] == 4
    assert_reconciles(manifest)
    rows = dead_letters(tmp_path / "out")
    assert [(r["reason"], r["line"]) for r in rows] == [("malformed", n) for n in (4, 5, 6, 8)]
    assert rows[2]["record"] == f'{T0 + 4},u1,"i1,impression,r1,3'
    assert {"i,1", "i2", 'i"3'} <= set(vocab(tmp_path / "out", "item"))


# ---- duplicates, labels, history, sessions, splits ----------------------------------------------


def test_duplicates_dropped_and_counted(tmp_path: Path) -> None:
    records = [
        ev(T0, "u1", "i1", event_id="e1"),
        ev(T0 + 5, "u1", "i2", event_id="e1"),  # same event_id, other content: a copy, the first wins
        ev(T0 + 10, "u2", "i3"),
        ev(T0 + 10, "u2", "i3"),  # same content, no event_id
        ev(T0 + 10, "u2", "i3", event_id="e9"),  # same content but an event_id: not a copy
        ev(T0 + 10, "u2", "i3", position=1),  # differs in position: not a copy
        ev(T0, user=""),  # rejected, not a duplicate
        ev(T0, user=""),
    ]
    manifest, out = ingest_lines(tmp_path, records)
    assert manifest["duplicates"] == 2
    assert manifest["rejected"] == {"empty_id": 2}
    assert manifest["accepted"] == 4
    assert_reconciles(manifest)
    rows = examples(out)
    assert len(rows) == 4
    items = vocab(out, "item")
    kept = next(r for r in rows if r["event_id"] == "e1")
    assert kept["item"] == items["i1"] and kept["ts"] == T0


def test_duplicates_across_files(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", GOOD)
    b = write_jsonl(tmp_path / "b.jsonl", [GOOD[0], ev(T0 + 3_000, "u3", "i3")])
    manifest = ingest.run([str(a), str(b)], tmp_path / "out", LOOSE)
    assert manifest["read"] == 5
    assert manifest["duplicates"] == 1
    assert manifest["accepted"] == 4
    assert_reconciles(manifest)
    assert [f["path"] for f in manifest["inputs"]] == [str(a), str(b)]
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["inputs"])


def test_labels_by_request_and_by_attribution_window(tmp_path: Path) -> None:
    window = 30 * MIN
    records = [
        # With request_id: exact (request, item) match, whenever the click came.
        ev(T0, "u1", "i1", request_id="r1"),
        ev(T0, "u1", "i2", request_id="r1"),
        ev(T0, "u1", "i3", request_id="r1"),
        ev(T0 + 1_000, "u1", "i1", "click", request_id="r1"),
        ev(T0 + 1_000, "u1", "i3", "click", request_id="r2"),  # another request: no credit
        # Without request_id: a click by the same user on the same item within the window after.
        ev(T0, "u2", "i5"),
        ev(T0 + window, "u2", "i5", "click"),  # exactly at the window's end: credited
        ev(T0, "u2", "i6"),
        ev(T0 + window + 1, "u2", "i6", "click"),  # one ms late
        ev(T0 + 10 * MIN, "u2", "i7"),
        ev(T0 + 10 * MIN - 1, "u2", "i7", "click"),  # before the impression
        ev(T0 + 20 * MIN, "u2", "i8"),
        ev(T0 + 20 * MIN, "u2", "i8", "click"),  # same ms
        ev(T0, "u3", "i5"),  # u2's click on i5 is not u3's
        ev(T0 + 1, "u2", "i9"),
        ev(T0 + 2, "u2", "i9", "cart"),  # only clicks label
    ]
    manifest, out = ingest_lines(tmp_path, records)
    user_of = {index: raw for raw, index in vocab(out, "user").items()}
    item_of = {index: raw for raw, index in vocab(out, "item").items()}
    labels = {(user_of[r["user"]], item_of[r["item"]], r["ts"]): r["label"] for r in examples(out)}
    assert labels == {
        ("u1", "i1", T0): 1,
        ("u1", "i2", T0): 0,
        ("u1", "i3", T0): 0,
        ("u2", "i5", T0): 1,
        ("u2", "i6", T0): 0,
        ("u2", "i7", T0 + 10 * MIN): 0,
        ("u2", "i8", T0 + 20 * MIN): 1,
        ("u3", "i5", T0): 0,
        ("u2", "i9", T0 + 1): 0,
    }
    assert manifest["positives"] == 3
    assert manifest["label_rate"] == pytest.approx(3 / 9)


def test_hist_end_counts_behaviors_strictly_before(tmp_path: Path) -> None:
    records = [
        ev(T0, "u1", "i0"),  # before any behavior
        ev(T0 + 100, "u1", "i1", "click"),
        ev(T0 + 200, "u1", "i2", "buy"),
        ev(T0 + 200, "u1", "i3", "fav"),
        ev(T0 + 200, "u1", "i4"),  # same ms as two behaviors: neither counts
        ev(T0 + 201, "u1", "i5"),
        ev(T0 + 150, "u2", "i6"),  # another user's behaviors never count
    ]
    _, out = ingest_lines(tmp_path, records)
    items = vocab(out, "item")
    hist = {r["item"]: r["hist_end"] for r in examples(out)}
    assert hist == {items["i0"]: 0, items["i4"]: 1, items["i5"]: 3, items["i6"]: 0}
    behaviors = read_table(out / "behaviors", BEHAVIORS).to_pylist()
    u1 = next(b for b in behaviors if b["user"] == vocab(out, "user")["u1"])
    assert u1["ts"] == [T0 + 100, T0 + 200, T0 + 200]
    assert u1["type"] == [BEHAVIOR_TYPE_CODE[k] for k in ("click", "buy", "fav")]
    assert u1["item"] == [items["i1"], items["i2"], items["i3"]]
    u2 = next(b for b in behaviors if b["user"] == vocab(out, "user")["u2"])
    assert u2["item"] == []  # one row per user, even without behaviors


def test_sessions_split_exactly_at_the_gap(tmp_path: Path) -> None:
    gap = 30 * MIN
    t1 = T0 + gap - 1  # one ms inside the gap: same session
    t2 = t1 + gap  # exactly the gap later: a new session
    records = [
        ev(T0, item="a"),
        ev(t1, item="b", kind="click"),
        ev(t2, item="c"),
        ev(t2 + 5, item="d", kind="buy"),
    ]
    manifest, out = ingest_lines(tmp_path, records)
    items = vocab(out, "item")
    assert {r["item"]: r["session"] for r in examples(out)} == {items["a"]: 0, items["c"]: 1}
    (behaviors,) = read_table(out / "behaviors", BEHAVIORS).to_pylist()
    assert behaviors["session"] == [0, 1]
    assert manifest["sessions"] == 2


def test_time_split(tmp_path: Path) -> None:
    second = 1_000
    at = [0, 799_999, 800_000, 899_999, 900_000, 1_000_000]
    records = [ev(T0 + s * second // 1_000, item=f"i{k}") for k, s in enumerate(at)]
    manifest, out = ingest_lines(tmp_path, records)
    assert manifest["split_boundaries"]["valid_start_ms"] == T0 + 800_000
    assert manifest["split_boundaries"]["test_start_ms"] == T0 + 900_000
    assert manifest["time_range"] == {
        "min_ms": T0,
        "max_ms": T0 + 1_000_000,
        "min": "2026-01-01T00:00:00.000+00:00",
        "max": "2026-01-01T00:16:40.000+00:00",
    }
    split = {r["ts"] - T0: r["split"] for r in examples(out)}
    assert split == {
        0: "train",
        799_999: "train",
        800_000: "valid",
        899_999: "valid",
        900_000: "test",
        1_000_000: "test",
    }
    assert manifest["examples_by_split"] == {"train": 2, "valid": 2, "test": 2}


# ---- vocab, determinism, thresholds, formats, side tables ---------------------------------------


def test_vocab_stable_across_runs_new_ids_appended(tmp_path: Path) -> None:
    shared = tmp_path / "vocab"
    first = write_jsonl(tmp_path / "first.jsonl", [ev(T0, "u2", "i1"), ev(T0, "u1", "i1")])
    ingest.run([str(first)], tmp_path / "run1", LOOSE, vocab_dir=shared)
    assert vocab(tmp_path / "run1", "user") == {"u1": 1, "u2": 2}

    second = write_jsonl(
        tmp_path / "second.jsonl", [ev(T0, "u3", "i2"), ev(T0, "u0", "i1"), ev(T0, "u1", "i1")]
    )
    manifest = ingest.run([str(second)], tmp_path / "run2", LOOSE, vocab_dir=shared)
    expected = {"u1": 1, "u2": 2, "u0": 3, "u3": 4}
    assert vocab(tmp_path / "run2", "user") == expected
    assert vocab_file(shared, "user") == expected
    assert vocab_file(shared, "item") == {"i1": 1, "i2": 2}
    assert manifest["vocab"]["user"] == {"size": 4, "new": 2}
    users = read_table(tmp_path / "run2" / "examples", EXAMPLES).column("user").to_pylist()
    assert sorted(users) == [1, 3, 4]


def _tables(out: Path) -> dict[str, pa.Table]:
    tables = {name: read_table(out / name) for name in ("behaviors", "examples", "users", "items")}
    for entity in ("user", "item", "category", "brand"):
        tables[entity] = read_table(out / "vocab" / f"{entity}.parquet")
    return tables


def test_rerun_gives_identical_rows_however_the_input_is_cut(tmp_path: Path, monkeypatch) -> None:
    records = []
    for k in range(300):
        user, item = f"u{k % 17}", f"i{k % 23}"
        records.append(
            ev(T0 + k * 7 * MIN, user, item, request_id=f"r{k}", position=k % 5, category_id=f"c{k % 4}")
        )
        if k % 3 == 0:
            records.append(ev(T0 + k * 7 * MIN + 500, user, item, "click", request_id=f"r{k}"))
        if k % 10 == 0:
            records.append(records[-1])  # a duplicate
    src = write_jsonl(tmp_path / "events.jsonl", records)
    first = ingest.run([str(src)], tmp_path / "a", LOOSE)
    again = ingest.run([str(src)], tmp_path / "b", LOOSE)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 512)  # many read tasks, copies in different tasks
    cut = ingest.run([str(src)], tmp_path / "c", LOOSE)
    assert first["duplicates"] == again["duplicates"] == cut["duplicates"] == 30
    a, b, c = _tables(tmp_path / "a"), _tables(tmp_path / "b"), _tables(tmp_path / "c")
    for name in a:
        assert a[name].equals(b[name]), name
        assert a[name].equals(c[name]), name
    assert sorted(p.name for p in (tmp_path / "a" / "examples").iterdir()) == sorted(
        p.name for p in (tmp_path / "b" / "examples").iterdir()
    )


def test_rejected_share_over_threshold_raises_after_writing_evidence(tmp_path: Path) -> None:
    cfg = IngestConfig(max_rejected_share=0.2)
    records = [*GOOD, "garbage", ev(T0, kind="view")]
    with pytest.raises(IngestRejectedError) as err:
        ingest_lines(tmp_path, records, cfg, vocab_dir=tmp_path / "vocab")
    message = str(err.value)
    assert "rejected 2 of 5 records (40.0%)" in message
    assert "max_rejected_share 20.0%" in message
    assert "malformed 1" in message and "unknown_event_type 1" in message
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["dead_letter", "manifest.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ok"] is False
    assert manifest["rejected"] == {"malformed": 1, "unknown_event_type": 1}
    assert_reconciles(manifest)
    assert len(dead_letters(out)) == 2
    assert not (tmp_path / "vocab").exists()  # a failed run leaves the shared vocab alone


def test_rejected_share_at_threshold_passes(tmp_path: Path) -> None:
    manifest, _ = ingest_lines(tmp_path, [*GOOD, "garbage"], IngestConfig(max_rejected_share=0.25))
    assert manifest["ok"] is True
    assert manifest["rejected_share"] == 0.25


def test_parquet_and_csv_inputs_match_jsonl(tmp_path: Path) -> None:
    records = [
        ev(T0, "u1", "i1", request_id="r1", position=0, category_id="c1", event_id="e1"),
        ev(T0 + 1_000, "u1", "i1", "click", request_id="r1", event_id="e2"),
        ev(T0 + 2_000, "u2", "i,2", position=3, event_id="e3"),
        ev(T0 + 3_000, "u2", "i,2", "cart", event_id="e4"),
        ev(T0 + 4_000, "u2", "i3", event_id="e5"),
    ]
    jsonl = write_jsonl(tmp_path / "events.jsonl", records)
    columns = {f.name: [r.get(f.name) for r in records] for f in sources.RAW_EVENT}
    table = pa.table(columns, schema=sources.RAW_EVENT)
    pq.write_table(table, tmp_path / "events.parquet")
    table.to_pandas().to_csv(tmp_path / "events.csv", index=False)

    outputs = {}
    for name in ("events.jsonl", "events.parquet", "events.csv"):
        manifest = ingest.run([str(tmp_path / name)], tmp_path / f"out-{name}", LOOSE)
        assert manifest["read"] == manifest["accepted"] == 5, name
        outputs[name] = _tables(tmp_path / f"out-{name}")
    assert manifest["inputs"][0]["fmt"] == "csv"
    for name in ("events.parquet", "events.csv"):
        for key, value in outputs["events.jsonl"].items():
            assert value.equals(outputs[name][key]), (name, key)
    assert jsonl.exists()


def test_parquet_rows_rejected_with_reasons(tmp_path: Path) -> None:
    table = pa.table(
        {
            "ts": pa.array([T0, 5, None], pa.int64()),
            "user_id": ["u1", "u1", "u1"],
            "item_id": ["i1", "i1", "i1"],
            "event_type": ["impression", "click", "click"],
        }
    )
    pq.write_table(table, tmp_path / "events.parquet")
    manifest = ingest.run([str(tmp_path / "events.parquet")], tmp_path / "out", LOOSE)
    assert manifest["rejected"] == {"ts_before_2000": 1, "missing_field": 1}
    assert_reconciles(manifest)
    rows = dead_letters(tmp_path / "out")
    assert [(r["line"], r["reason"]) for r in rows] == [(2, "ts_before_2000"), (3, "missing_field")]
    assert json.loads(rows[0]["record"]) == {"ts": 5, "user_id": "u1", "item_id": "i1", "event_type": "click"}


def test_side_tables_items_cover_events_and_categories(tmp_path: Path) -> None:
    items = tmp_path / "items.parquet"
    pq.write_table(
        pa.table(
            {
                "item_id": ["i1", "i2"],
                "category_id": ["c1", "c2"],
                "brand_id": ["b1", None],
                "price": [9.5, 1.0],
            }
        ),
        items,
    )
    users = tmp_path / "users.parquet"
    pq.write_table(pa.table({"user_id": ["u1", "u9"], "age_bucket": pa.array([3, 4], pa.int32())}), users)
    records = [
        ev(T0, "u1", "i1", category_id="cX"),  # the items table wins over the event
        ev(T0 + 1, "u1", "i3", category_id="c3"),  # not in the items table: the event's category
        ev(T0 + 2, "u2", "i3"),  # no category_id: i3's category from its latest event naming one
    ]
    _, out = ingest_lines(tmp_path, records, users=users, items=items)
    cats, item_ids = vocab(out, "category"), vocab(out, "item")
    assert {r["item"]: r["category"] for r in examples(out)} == {
        item_ids["i1"]: cats["c1"],
        item_ids["i3"]: cats["c3"],
    }
    rows = {r["item"]: r for r in read_table(out / "items", ITEMS).to_pylist()}
    assert set(rows) == {item_ids["i1"], item_ids["i2"], item_ids["i3"]}
    assert rows[item_ids["i1"]]["brand"] == vocab(out, "brand")["b1"]
    assert rows[item_ids["i2"]]["brand"] == 0  # unknown brand
    assert rows[item_ids["i3"]] == {"item": item_ids["i3"], "category": cats["c3"], "brand": 0, "price": None}
    user_ids = vocab(out, "user")
    user_rows = {r["user"]: r for r in read_table(out / "users", USERS).to_pylist()}
    assert set(user_rows) == {user_ids["u1"], user_ids["u2"], user_ids["u9"]}
    assert user_rows[user_ids["u1"]]["age_bucket"] == 3
    assert user_rows[user_ids["u2"]]["age_bucket"] is None


def test_failed_run_leaves_nothing_half_written(tmp_path: Path) -> None:
    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ["i1"]}), items)  # lacks the required category_id
    with pytest.raises(Exception, match="category_id"):
        ingest_lines(tmp_path, GOOD, items=items)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_chunks_cover_every_line_once_with_line_numbers(tmp_path: Path) -> None:
    records = [ev(T0 + k, item=f"i{k}") for k in range(50)]
    records[37] = "broken"
    src = write_jsonl(tmp_path / "events.jsonl", records)
    _, tasks = sources.plan([str(src)], chunk_bytes=300)
    assert len(tasks) > 5
    batches = [b for t in tasks for b in sources.read_task(t)]
    lines = [int(n) for b in batches for n in b.lines]
    assert lines == list(range(1, 51))
    broken = [int(b.lines[i]) for b in batches for i in range(b.n) if b.pre[i]]
    assert broken == [38]


def test_unknown_input_and_format_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="matches no file"):
        ingest.run([str(tmp_path / "nope-*.jsonl")], tmp_path / "out", LOOSE)
    (tmp_path / "events.txt").write_text("x\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        ingest.run([str(tmp_path / "events.txt")], tmp_path / "out", LOOSE)


def test_runner_is_in_process_by_default_and_passes_other_names_through() -> None:
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    runner, _ = pipeline._runner(IngestConfig())
    assert isinstance(runner, FnApiRunner)
    runner, options = pipeline._runner(
        IngestConfig(runner="FlinkRunner", runner_options=["--flink_master=localhost:8081"])
    )
    assert runner == "FlinkRunner"
    flags = options.get_all_options(retain_unknown_options=True)
    assert flags["runner"] == "FlinkRunner"
    assert flags["flink_master"] == "localhost:8081"


def test_few_bad_lines_in_a_big_chunk_and_blank_lines(tmp_path: Path) -> None:
    records: list[dict | str | bytes] = [ev(T0 + k, item=f"i{k % 50}", event_id=f"e{k}") for k in range(3000)]
    for k in (0, 777, 1500, 2999):
        records[k] = "{broken"
    records[1200] = ev(str(T0 + 1200), item="i0", event_id="e1200")  # ts type changes mid-chunk
    records.insert(100, "")  # blank lines are not records
    records.insert(200, "  \t")
    manifest, out = ingest_lines(tmp_path, records)
    assert manifest["read"] == 3000
    assert manifest["rejected"] == {"malformed": 4}
    assert manifest["accepted"] == 2996
    assert_reconciles(manifest)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    expected = [n for n, line in enumerate(lines, start=1) if line == "{broken"]
    assert [r["line"] for r in dead_letters(out)] == expected
    assert len(examples(out)) == 2996


def test_item_stats_are_point_in_time_daily_snapshots(tmp_path: Path) -> None:
    day = 86_400_000
    records = [
        ev(T0 + 10, "u1", "i1", request_id="r1"),
        ev(T0 + 20, "u2", "i1", request_id="r2"),
        ev(T0 + 30, "u1", "i1", "click", request_id="r1"),
        ev(T0 + 40, "u1", "i2"),
        ev(T0 + day + 5, "u2", "i1", "click"),  # a click on a day without impressions of i1
        ev(T0 + day + 6, "u2", "i1", "buy"),  # not a click: not counted
        ev(T0 + 2 * day + 7, "u3", "i1"),
        ev(T0 + 2 * day + 8, "u3", "i1", "impression"),
    ]
    manifest, out = ingest_lines(tmp_path, records)
    items = vocab(out, "item")
    rows = read_table(out / "item_stats", ITEM_STATS).sort_by([("item", "ascending"), ("ts", "ascending")])
    i1, i2 = items["i1"], items["i2"]
    # (item, ts, impressions_1d, clicks_1d, impressions_total, clicks_total); ts is the day's end,
    # after every event it counts.
    expected = [(i1, T0 + day, 2, 1, 2, 1), (i1, T0 + 3 * day, 2, 0, 4, 2), (i2, T0 + day, 1, 0, 1, 0)]
    got = [tuple(r.values()) for r in rows.to_pylist()]
    assert sorted(got) == sorted(expected)
    assert manifest["item_stats_rows"] == 3


_KILL_SCRIPT = """
import sys
from components import ingest
from seqrank.config import IngestConfig
ingest.run([sys.argv[1]], sys.argv[2], IngestConfig())
"""


def test_killed_run_leaves_no_output_and_rerun_matches_clean_run(tmp_path: Path) -> None:
    src = write_events(make_events(150_000, 2_000, 5_000, 50, 10), tmp_path, "jsonl")
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(src), str(out)], cwd=root)
    try:
        # Kill once the run is writing into its temporary directory, i.e. in the middle of it.
        while proc.poll() is None and not list(tmp_path.glob(".tmp-out-*/behaviors/*.parquet")):
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()

    manifest = ingest.run([str(src)], out, IngestConfig())
    clean = tmp_path / "clean"
    ingest.run([str(src)], clean, IngestConfig())
    assert manifest["read"] == 150_000
    for name in ("behaviors", "examples", "vocab", "users", "items", "item_stats"):
        assert pq.read_table(out / name).equals(pq.read_table(clean / name)), name
