"""The validation step passes clean data and stops on planted anomalies, naming each one."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from components import validate
from seqrank.config import ValidateConfig
from tests.helpers.synthetic import write_training_ingest

# The synthetic helper draws its behaviors apart from its impressions, so its clicks label none of
# them; the label join is tested on a real ingest output (test_validate_dataset.py).
CFG = ValidateConfig(min_examples=10, max_unmatched_click_share=1.0)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_training_ingest(tmp_path / "ingest")


def _rewrite(path: Path, fn) -> None:
    for part in sorted(path.glob("*.parquet")):
        pq.write_table(fn(pq.read_table(part)), part)


def test_clean_data_passes_and_writes_data_docs(data: Path, tmp_path: Path) -> None:
    report = validate.run(data, CFG, docs_dir=tmp_path / "docs")
    assert report["success"]
    assert report["rows"]["examples"] > 100
    assert (tmp_path / "docs" / "index.html").exists()
    assert (tmp_path / "docs" / "report.json").exists()


def test_all_labels_zero_fails_on_label_mean(data: Path) -> None:
    _rewrite(
        data / "examples",
        lambda t: t.set_column(
            t.schema.get_field_index("label"), "label", pa.array([0] * t.num_rows, pa.int8())
        ),
    )
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(data, CFG)
    message = str(err.value)
    assert "expect_column_mean_to_be_between on column 'label': observed 0.0" in message
    assert f"min_value={CFG.min_label_rate}" in message


def test_dropped_column_is_named(data: Path) -> None:
    _rewrite(data / "examples", lambda t: t.drop_columns(["position"]))
    with pytest.raises(validate.ValidationFailed, match="expect_column_to_exist on column 'position'"):
        validate.run(data, CFG)


def test_history_end_beyond_behaviors_fails(data: Path) -> None:
    _rewrite(
        data / "examples",
        lambda t: t.set_column(
            t.schema.get_field_index("hist_end"),
            "hist_end",
            pc.add(t.column("hist_end"), 1000).cast(pa.int32()),
        ),
    )
    with pytest.raises(validate.ValidationFailed, match="on column 'hist_len_ok'"):
        validate.run(data, CFG)


def test_unsorted_behaviors_fail(data: Path) -> None:
    def reverse_first(t: pa.Table) -> pa.Table:
        ts = t.column("ts").to_pylist()
        ts[0] = list(reversed(ts[0]))
        return t.set_column(t.schema.get_field_index("ts"), "ts", pa.array(ts, pa.list_(pa.int64())))

    _rewrite(data / "behaviors", reverse_first)
    with pytest.raises(validate.ValidationFailed, match=r"\[behaviors\] .* on column 'ts_sorted'"):
        validate.run(data, CFG)


def test_missing_split_fails(data: Path) -> None:
    _rewrite(data / "examples", lambda t: t.filter(pc.not_equal(t.column("split"), "test")))
    with pytest.raises(validate.ValidationFailed, match="expect_column_distinct_values_to_contain_set"):
        validate.run(data, CFG)


def test_sortedness_ignores_user_boundaries_and_empty_users() -> None:
    from components.validate.suites import behaviors_frame

    table = pa.table(
        {
            "user": [1, 2, 3, 4, 5],
            "item": [[1, 2], [], [3, 4, 5], [6], []],
            "category": [[1, 1], [], [2, 2, 2], [1], []],
            "ts": [[5, 6], [], [9, 3, 10], [1], []],
        }
    )
    assert behaviors_frame(table)["ts_sorted"].tolist() == [True, True, False, True, True]
    assert behaviors_frame(table.slice(2))["ts_sorted"].tolist() == [False, True, True]


def _examples(data: Path) -> pa.Table:
    return pq.read_table(data / "examples")


def _write_examples(data: Path, table: pa.Table) -> None:
    for part in (data / "examples").glob("*.parquet"):
        part.unlink()
    pq.write_table(table, data / "examples" / "part-00000.parquet")


def test_resample_of_the_same_data_shows_no_drift(data: Path, tmp_path: Path) -> None:
    previous = tmp_path / "previous"
    validate.run(data, CFG, docs_dir=previous)
    table = _examples(data)
    rng = np.random.default_rng(1)
    resampled = table.take(np.sort(rng.choice(table.num_rows, table.num_rows, replace=True)))
    # Each draw is an impression of its own: one event id per row, as ingest would give.
    ids = pa.array([f"resampled-{i}" for i in range(resampled.num_rows)])
    _write_examples(data, resampled.set_column(resampled.schema.get_field_index("event_id"), "event_id", ids))
    report = validate.run(data, CFG.model_copy(update={"drift_action": "fail"}), against=previous)
    assert report["drift"] == []


def test_shifted_category_mix_is_drift(data: Path, tmp_path: Path) -> None:
    previous = tmp_path / "previous"
    validate.run(data, CFG, docs_dir=previous)
    table = _examples(data)
    category = table.column("category").to_numpy().copy()
    category[: len(category) * 2 // 3] = 1
    _write_examples(
        data, table.set_column(table.schema.get_field_index("category"), "category", pa.array(category))
    )
    # The items table still has the old categories; that is the domains suite's finding, not drift's.
    cfg = CFG.model_copy(update={"max_category_mismatch_share": 1.0})
    warned = validate.run(data, cfg, against=previous)
    assert any("category mix" in d for d in warned["drift"])
    with pytest.raises(validate.ValidationFailed, match=r"\[drift\] category mix Jensen-Shannon distance"):
        validate.run(data, cfg.model_copy(update={"drift_action": "fail"}), against=previous)


def test_drift_against_a_previous_ingest_output(data: Path, tmp_path: Path) -> None:
    # A raw ingest output (no saved profile) works as the reference too.
    report = validate.run(data, CFG, against=data)
    assert report["drift"] == []
    assert report["drift_against"] == str(data)


def test_string_where_an_id_number_was(data: Path) -> None:
    _rewrite(
        data / "examples",
        lambda t: t.set_column(
            t.schema.get_field_index("user"), "user", pc.cast(t.column("user"), pa.string())
        ),
    )
    with pytest.raises(
        validate.ValidationFailed, match="expect_column_values_to_be_in_type_list on column 'user'"
    ):
        validate.run(data, CFG)


def _raw_log(data: Path, tmp_path: Path, lines: list[dict]) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps(line) + "\n" for line in lines) + "{not json\n")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["inputs"] = [{"path": str(raw), "fmt": "jsonl"}]
    (data / "manifest.json").write_text(json.dumps(manifest))


def _event(i: int, **changes) -> dict:
    return {"ts": 1_767_225_600_000 + i, "user_id": f"u{i % 7}", "item_id": f"i{i}", "event_type": "click",
            "event_id": f"e{i}", **changes}  # fmt: skip


def test_clean_raw_sample_passes(data: Path, tmp_path: Path) -> None:
    lines = [_event(i) for i in range(200)]
    lines[0]["ts"] = "2026-01-01T00:00:00Z"  # ISO timestamps are parsed too
    _raw_log(data, tmp_path, lines)
    assert validate.run(data, CFG)["success"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"event_type": "view"}, "expect_column_values_to_be_in_set on column 'event_type'"),
        ({"ts": 86_400_000}, "expect_column_values_to_be_between on column 'ts_ms'"),
        ({"user_id": None}, "expect_column_values_to_not_be_null on column 'user_id'"),
        (
            {"event_id": "same"},
            "expect_column_proportion_of_unique_values_to_be_between on column 'event_id'",
        ),
    ],
)
def test_raw_event_anomalies_are_named(data: Path, tmp_path: Path, change: dict, named: str) -> None:
    # A fifth of the sample is bad, beyond the default 5% tolerance.
    _raw_log(data, tmp_path, [_event(i, **(change if i % 5 == 0 else {})) for i in range(200)])
    with pytest.raises(validate.ValidationFailed, match=f"\\[raw_events\\] {named}"):
        validate.run(data, CFG)
