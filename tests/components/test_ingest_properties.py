"""Property: no example's history holds a behavior at or after the example's timestamp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import example as hypothesis_example
from hypothesis import strategies as st

from components import ingest
from components.ingest import shards as tf
from seqrank.config import IngestConfig
from seqrank.schema import BEHAVIORS, EXAMPLES
from seqrank.storage import read_table

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
KINDS = ("impression", "click", "cart", "fav", "buy")

# Few users, items and distinct times, so that ties in ts (the hard case) are common.
events = st.lists(
    st.tuples(
        st.integers(0, 3),  # user
        st.integers(0, 5),  # item
        st.integers(0, 40),  # ts offset in seconds
        st.sampled_from(KINDS),
    ),
    min_size=1,
    max_size=60,
)


def assert_history_strictly_before(behaviors: list[dict], examples: list[dict]) -> None:
    by_user = {b["user"]: b["ts"] for b in behaviors}
    for example in examples:
        history = by_user[example["user"]]
        end = example["hist_end"]
        assert all(ts < example["ts"] for ts in history[:end])
        if end < len(history):
            assert history[end] >= example["ts"]


def _encoded(rows: list[tuple[int, int, int, str]]) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            "user": pa.array([r[0] + 1 for r in rows], pa.int64()),
            "item": pa.array([r[1] + 1 for r in rows], pa.int64()),
            "category": pa.array(np.ones(n, np.int64)),
            "ts": pa.array([T0 + r[2] * 1000 for r in rows], pa.int64()),
            "type": pa.array([KINDS.index(r[3]) for r in rows], pa.int8()),
            "position": pa.array(np.zeros(n, np.int32)),
            "event_id": pa.nulls(n, pa.string()),
            "request_id": pa.nulls(n, pa.string()),
            "seq": pa.array(np.arange(n, dtype=np.int64)),
        },
        schema=tf.ENCODED,
    )


@settings(max_examples=300, deadline=None)
@given(events)
def test_shard_history_is_strictly_before_each_example(rows: list[tuple[int, int, int, str]]) -> None:
    out = tf.build_shard([_encoded(rows)], None, gap_ms=10_000, window_ms=60_000)
    assert_history_strictly_before(out.behaviors.to_pylist(), out.examples.to_pylist())
    assert out.behaviors.column("ts").to_pylist() == [
        sorted(ts) for ts in out.behaviors.column("ts").to_pylist()
    ]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events)
@hypothesis_example(
    [(0, 0, 16, "impression"), (0, 0, 0, "impression"), (0, 0, 0, "impression"), (0, 0, 0, "impression")]
)
def test_pipeline_history_is_strictly_before_each_example(
    tmp_path: Path, rows: list[tuple[int, int, int, str]]
) -> None:
    src = tmp_path / "events.jsonl"
    records = [
        {"ts": T0 + s * 1000, "user_id": f"u{u}", "item_id": f"i{i}", "event_type": kind}
        for u, i, s, kind in rows
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    ingest.run([str(src)], out, IngestConfig())
    behaviors = read_table(out / "behaviors", BEHAVIORS).to_pylist()
    examples = read_table(out / "examples", EXAMPLES).to_pylist()
    # Exact copies (same user, item, time and type, no event id) are one event after dedupe.
    assert len(examples) == len({row for row in rows if row[3] == "impression"})
    assert_history_strictly_before(behaviors, examples)


def _rows(table: pa.Table, drop: tuple[str, ...] = ()) -> list[tuple]:
    keep = [name for name in table.column_names if name not in drop]
    return sorted(tuple(str(v) for v in row.values()) for row in table.select(keep).to_pylist())


@settings(max_examples=300, deadline=None)
@given(events, st.integers(0, 41))
def test_two_consecutive_windows_equal_one_run_over_both(
    rows: list[tuple[int, int, int, str]], cut_s: int
) -> None:
    """A backfill split at any instant gives the examples and the behaviors of one run over all."""
    table = _encoded(rows)
    cut = T0 + cut_s * 1000
    kw = {"gap_ms": 10_000, "window_ms": 5_000}
    whole = tf.build_shard([table], None, **kw)
    first = tf.build_shard([table], None, **kw, run_window=(tf.NO_LIMIT[0], cut))
    second = tf.build_shard([table], None, **kw, run_window=(cut, tf.NO_LIMIT[1]))

    both = pa.concat_tables([first.examples, second.examples])
    assert _rows(both, ("split",)) == _rows(whole.examples, ("split",))
    assert _rows(second.behaviors) == _rows(whole.behaviors)
    # The first window's history is the whole run's as of the cut, for the users seen before it.
    expected = []
    for user in whole.behaviors.to_pylist():
        if any(r[0] + 1 == user["user"] and T0 + r[2] * 1000 < cut for r in rows):
            n = sum(ts < cut for ts in user["ts"])
            expected.append({k: (v[:n] if isinstance(v, list) else v) for k, v in user.items()})
    assert _rows(first.behaviors) == _rows(pa.Table.from_pylist(expected, schema=BEHAVIORS))
    assert first.stats["events"] == whole.stats["events"] == len(rows)
