"""Dataset-level checks on a real ingest output: clean data passes, each planted anomaly is named
with its suite, check, observed value and bound, and every planted row is counted."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from components import validate
from components.validate import Failure
from components.validate.drift import PROFILE_FILE
from seqrank.config import ValidateConfig
from tests.helpers.validation import ingested_world, replace_column, rewrite

# The tiny world has ~200-700 clicks per position; compare them all.
CFG = ValidateConfig(min_position_clicks=50)
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingested_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def data(world: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(world, tmp_path / "ingest"))


def _failures(data: Path, cfg: ValidateConfig = CFG, **kwargs) -> list[Failure]:
    with pytest.raises(validate.ValidationFailed) as err:
        validate.run(data, cfg, **kwargs)
    return err.value.failures


def _named(failures: list[Failure]) -> set[tuple[str, str, str | None]]:
    return {(f.suite, f.expectation, f.column) for f in failures}


def _one(failures: list[Failure], suite: str, check: str, column: str) -> Failure:
    found = [f for f in failures if (f.suite, f.expectation, f.column) == (suite, check, column)]
    assert len(found) == 1, [f.describe() for f in failures]
    return found[0]


def _manifest(data: Path) -> dict:
    return json.loads((data / "manifest.json").read_text())


def _write_manifest(data: Path, manifest: dict) -> None:
    (data / "manifest.json").write_text(json.dumps(manifest))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


# ---- clean data -----------------------------------------------------------------------------------


def test_clean_ingest_output_passes_every_dataset_check(data: Path) -> None:
    report = validate.run(data, CFG)
    assert report["success"], report["failures"]
    dataset = report["dataset"]
    manifest = _manifest(data)
    # The counts are the ingest's own: nothing read was lost between ingest and validation.
    assert dataset["counts"] == {
        "raw_events_read": manifest["read"],
        "raw_events_accepted": manifest["accepted"],
        **{f"examples_{split}": n for split, n in manifest["examples_by_split"].items()},
        "behaviors": manifest["users"],
        "behavior_events": manifest["behaviors"],
        "users": pq.read_table(data / "users").num_rows,
        "items": pq.read_table(data / "items").num_rows,
    }
    join = dataset["label_join"]
    assert join["clicks"] > 1000
    assert join["unmatched_clicks"] == 0
    assert len(join["positions_compared"]) == 10
    assert join["max_ctr_rise"] < 0  # generated CTR falls with the position all the way
    assert dataset["skipped"] == ["volume.row_count_vs_accepted: no accepted run to compare with"]


def test_accepted_run_keeps_its_row_counts_and_the_same_data_passes_against_it(
    data: Path, tmp_path: Path
) -> None:
    first = validate.run(data, CFG, docs_dir=tmp_path / "docs")
    validate.accept(tmp_path / "docs", tmp_path / "accepted")
    profile = json.loads((tmp_path / "accepted" / PROFILE_FILE).read_text())
    assert profile["volume"] == first["dataset"]["counts"]
    again = validate.run(data, CFG, against=tmp_path / "accepted")
    assert again["success"]
    assert again["dataset"]["skipped"] == []


# ---- volume ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [3.0, 0.25])
def test_row_counts_far_from_the_accepted_run_fail_each_output(
    data: Path, tmp_path: Path, scale: float
) -> None:
    # The accepted run was three times as big (or a quarter as big) as this one.
    validate.run(data, CFG, docs_dir=tmp_path / "docs")
    validate.accept(tmp_path / "docs", tmp_path / "accepted")
    path = tmp_path / "accepted" / PROFILE_FILE
    profile = json.loads(path.read_text())
    counts = profile["volume"]
    profile["volume"] = {name: int(n * scale) for name, n in counts.items()}
    path.write_text(json.dumps(profile))
    failures = _failures(data, against=tmp_path / "accepted")
    assert _named(failures) == {("volume", "row_count_vs_accepted", name) for name in counts}
    for f in failures:
        now, before = counts[f.column], profile["volume"][f.column]
        assert f.observed.startswith(f"{now / before:.4f} ({now:,} rows; accepted run {before:,})")
        assert f.bound == {"min_value": 0.5, "max_value": 2.0}


def test_a_split_under_its_minimum_fails(data: Path) -> None:
    def keep_five_test_rows(t: pa.Table) -> pa.Table:
        test = np.flatnonzero(t.column("split").to_numpy(zero_copy_only=False) == "test")
        dropped = np.setdiff1d(test, test[:5])
        return t.filter(pa.array(~np.isin(np.arange(t.num_rows), dropped)))

    rewrite(data / "examples", keep_five_test_rows)
    failures = _failures(data)
    short = _one(failures, "volume", "min_row_count", "examples_test")
    assert (short.observed, short.bound) == (5, {"min_value": 10})
    # The test split's clicks lost their impressions with it: the label join says so too.
    assert _named(failures) == {
        ("volume", "min_row_count", "examples_test"),
        ("label_join", "unmatched_click_share", "behaviors.click"),
    }


# ---- uniqueness -----------------------------------------------------------------------------------


def test_repeated_impressions_fail(data: Path) -> None:
    rewrite(data / "examples", lambda t: pa.concat_tables([t, t.slice(100, 7)]))
    failures = _failures(data)
    assert _named(failures) == {("uniqueness", "unique_key", "examples.event_id")}
    assert failures[0].observed.startswith("7 rows repeat a key")
    assert failures[0].bound == {"max_value": 0}


def test_impressions_without_event_ids_are_keyed_by_their_content(data: Path) -> None:
    rewrite(data / "examples", lambda t: replace_column(t, "event_id", [None] * t.num_rows))
    assert validate.run(data, CFG)["success"]
    rewrite(data / "examples", lambda t: pa.concat_tables([t, t.slice(10, 3)]))
    failures = _failures(data)
    column = "examples.(user, item, ts, position, request_id, event_id)"
    assert _named(failures) == {("uniqueness", "unique_key", column)}
    assert failures[0].observed.startswith("3 rows repeat a key")


@pytest.mark.parametrize(("entity", "column"), [("item", "raw"), ("brand", "index")])
def test_vocab_maps_ids_one_to_one(data: Path, entity: str, column: str) -> None:
    path = data / "vocab" / f"{entity}.parquet"
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[1] = values[0]  # two raw ids for one index, or one raw id at two indices
    pq.write_table(replace_column(table, column, values), path)
    failures = _failures(data)
    assert _named(failures) == {("uniqueness", "unique_key", f"vocab/{entity}.{column}")}
    assert failures[0].observed == f"1 rows repeat a key (e.g. [{values[0]!r}])"


def test_repeated_item_rows_fail(data: Path) -> None:
    rewrite(data / "items", lambda t: pa.concat_tables([t, t.slice(3, 2)]))
    failures = _failures(data)
    assert _named(failures) == {("uniqueness", "unique_key", "items.item")}
    assert failures[0].observed.startswith("2 rows repeat a key")


def test_two_behavior_rows_for_one_user_fail(data: Path) -> None:
    rewrite(data / "behaviors", lambda t: pa.concat_tables([t, t.slice(0, 1)]))
    failures = _failures(data)
    assert ("behaviors", "expect_column_values_to_be_unique", "user") in _named(failures)


# ---- referential integrity ------------------------------------------------------------------------


def _quiet_rows(t: pa.Table, n: int) -> np.ndarray:
    """Rows whose change disturbs no other check: unclicked impressions with no history yet."""
    label, hist_end = t.column("label").to_numpy(), t.column("hist_end").to_numpy()
    return np.flatnonzero((label == 0) & (hist_end == 0))[:n]


def test_example_user_outside_the_vocab_fails(data: Path) -> None:
    def stranger(t: pa.Table) -> pa.Table:
        user = t.column("user").to_numpy().copy()
        user[_quiet_rows(t, 3)] = 10_000
        return replace_column(t, "user", user)

    rewrite(data / "examples", stranger)
    failures = _failures(data)
    assert _named(failures) == {("references", "values_in_table", "examples.user")}
    assert failures[0].observed == "3 rows name no row of vocab/user (e.g. [10000])"
    assert failures[0].bound == {"value_set": "vocab/user index", "max_value": 0}


def test_example_item_outside_the_vocab_and_the_items_fails(data: Path) -> None:
    def unknown_item(t: pa.Table) -> pa.Table:
        item = t.column("item").to_numpy().copy()
        item[_quiet_rows(t, 3)] = 99_999
        return replace_column(t, "item", item)

    rewrite(data / "examples", unknown_item)
    failures = _failures(data)
    assert _named(failures) == {("references", "values_in_table", "examples.item")}
    assert sorted(f.observed for f in failures) == [
        "3 rows name no row of items (e.g. [99999])",
        "3 rows name no row of vocab/item (e.g. [99999])",
    ]


def test_behavior_item_outside_the_items_fails(data: Path) -> None:
    def unknown_cart_item(t: pa.Table) -> pa.Table:
        items, types = t.column("item").to_pylist(), t.column("type").to_pylist()
        planted = 0
        for row, kinds in enumerate(types):
            for k, kind in enumerate(kinds):
                if kind != 1 and planted < 2:  # carts, favs, buys: no click loses its item
                    items[row][k] = 99_999
                    planted += 1
        return replace_column(t, "item", items)

    rewrite(data / "behaviors", unknown_cart_item)
    failures = _failures(data)
    assert _named(failures) == {("references", "values_in_table", "behaviors.item")}
    assert failures[0].observed == "2 rows name no row of items (e.g. [99999])"


def test_history_end_beyond_the_users_behaviors_fails(data: Path) -> None:
    behaviors = pq.read_table(data / "behaviors")
    lengths = pc.list_value_length(behaviors.column("item")).to_pylist()
    n_behaviors = dict(zip(behaviors.column("user").to_pylist(), lengths, strict=True))

    def overshoot(t: pa.Table) -> pa.Table:
        hist_end = t.column("hist_end").to_numpy().copy()
        users = t.column("user").to_pylist()
        rows = [i for i, u in enumerate(users) if n_behaviors.get(u, 0) > 0][:2]
        hist_end[rows] = [n_behaviors[users[i]] + 1 for i in rows]
        return replace_column(t, "hist_end", hist_end)

    rewrite(data / "examples", overshoot)
    failures = _failures(data)
    assert _named(failures) == {("examples", "expect_column_values_to_be_in_set", "hist_len_ok")}
    assert failures[0].observed.startswith("2 unexpected")


# ---- domains --------------------------------------------------------------------------------------


def test_positions_outside_the_range_fail_and_unknown_ones_pass(data: Path) -> None:
    def bad_positions(t: pa.Table) -> pa.Table:
        position = t.column("position").to_numpy().copy()
        position[:4], position[4:6], position[6:9] = 5_000, -7, -1
        return replace_column(t, "position", position)

    rewrite(data / "examples", bad_positions)
    failures = _failures(data)
    assert _named(failures) == {("domains", "position_in_range", "examples.position")}
    assert failures[0].observed == "6 rows outside (e.g. [-7, 5000])"
    assert failures[0].bound == {"min_value": 0, "max_value": 1000, "unknown": -1}


def _shift_last_behaviors(t: pa.Table, users: int, by_ms: int) -> pa.Table:
    ts = t.column("ts").to_pylist()
    rows = [i for i, seq in enumerate(ts) if seq][:users]
    for i in rows:
        ts[i][-1] += by_ms  # the latest moves later: still sorted
    return replace_column(t, "ts", ts)


def test_timestamps_outside_the_ingest_window_fail(data: Path) -> None:
    span = _manifest(data)["time_range"]

    def late_impressions(t: pa.Table) -> pa.Table:
        ts = t.column("ts").to_numpy().copy()
        ts[_quiet_rows(t, 3)] = span["max_ms"] + DAY_MS
        return replace_column(t, "ts", ts)

    rewrite(data / "examples", late_impressions)
    rewrite(data / "behaviors", lambda t: _shift_last_behaviors(t, 2, span["max_ms"]))
    failures = _failures(data)
    assert _named(failures) == {
        ("domains", "ts_in_ingest_window", "examples.ts"),
        ("domains", "ts_in_ingest_window", "behaviors.ts"),
    }
    late = _iso(span["max_ms"] + DAY_MS)
    assert _one(failures, "domains", "ts_in_ingest_window", "examples.ts").observed == (
        f"3 rows outside (from {late} to {late})"
    )
    assert _one(failures, "domains", "ts_in_ingest_window", "behaviors.ts").observed.startswith(
        "2 rows outside"
    )
    assert failures[0].bound == {"min_value": _iso(span["min_ms"]), "max_value": _iso(span["max_ms"])}


def test_history_before_a_backfill_window_start_is_in_the_domain(data: Path) -> None:
    manifest = _manifest(data)
    span = manifest["time_range"]

    def earlier_first_behavior(t: pa.Table) -> pa.Table:
        ts = t.column("ts").to_pylist()
        for seq in [s for s in ts if s][:2]:
            seq[0] = span["min_ms"] - DAY_MS  # still the earliest: still sorted
        return replace_column(t, "ts", ts)

    rewrite(data / "behaviors", earlier_first_behavior)
    assert ("domains", "ts_in_ingest_window", "behaviors.ts") in _named(_failures(data))
    # A backfill window [start, end): its history reaches back before the start.
    _write_manifest(data, {**manifest, "window": {"start": span["min"], "end": None}})
    assert validate.run(data, CFG)["success"]


def test_item_category_other_than_the_items_tables_fails(data: Path) -> None:
    behaviors = pq.read_table(data / "behaviors")
    item = pc.list_flatten(behaviors.column("item")).to_numpy()
    item = int(np.bincount(item).argmax())  # the item with the most behaviors
    items = pq.read_table(data / "items")
    category = items.column("category").to_numpy().copy()
    row = int(np.flatnonzero(items.column("item").to_numpy() == item)[0])
    was = int(category[row])
    category[row] = was % 12 + 1  # another of the 12 categories
    rewrite(data / "items", lambda t: replace_column(t, "category", category))
    failures = _failures(data)
    assert _named(failures) == {
        ("domains", "category_matches_items", "behaviors.category"),
        ("domains", "category_matches_items", "examples.category"),
    }
    in_behaviors = _one(failures, "domains", "category_matches_items", "behaviors.category")
    assert f"e.g. item {item}: category {was} here, {was % 12 + 1} in items" in in_behaviors.observed
    assert in_behaviors.bound == {"max_value": 0.0}


# ---- the label join -------------------------------------------------------------------------------


def test_clicks_whose_impressions_were_lost_fail(data: Path) -> None:
    examples = pq.read_table(data / "examples")
    label = examples.column("label").to_numpy()
    pair = examples.column("user").to_numpy() * 1_000_000 + examples.column("item").to_numpy()
    positives = np.flatnonzero(label == 1)
    keys, count = np.unique(pair[positives], return_counts=True)
    # Impressions whose click can match no other impression of the same user and item.
    alone = positives[
        np.isin(pair[positives], keys[count == 1]) & ~np.isin(pair[positives], pair[label == 0])
    ]
    lost = alone[: len(positives) // 5]
    rewrite(data / "examples", lambda t: t.filter(pa.array(~np.isin(np.arange(t.num_rows), lost))))
    clicks = validate.run(data, CFG.model_copy(update={"max_unmatched_click_share": 1.0}))["dataset"]
    assert clicks["label_join"]["unmatched_clicks"] == len(lost)
    failures = _failures(data)
    assert _named(failures) == {("label_join", "unmatched_click_share", "behaviors.click")}
    n_clicks = clicks["label_join"]["clicks"]
    assert failures[0].observed.startswith(f"{len(lost) / n_clicks:.4f} ({len(lost)} of {n_clicks} clicks")
    assert failures[0].bound == {"max_value": 0.05}


def _reverse_positions(data: Path) -> None:
    rewrite(data / "examples", lambda t: replace_column(t, "position", 11 - t.column("position").to_numpy()))


def test_ctr_rising_with_the_position_fails(data: Path) -> None:
    _reverse_positions(data)
    failures = _failures(data)
    assert _named(failures) == {("label_join", "ctr_falls_with_position", "examples.position")}
    assert failures[0].bound == {"max_value": 0.25}
    rise = float(failures[0].observed.split()[0])
    assert rise > 0.25


def test_adapter_data_is_not_judged_on_positions(data: Path) -> None:
    _reverse_positions(data)
    _write_manifest(data, {**_manifest(data), "adapter": {"name": "movielens"}})
    report = validate.run(data, CFG)
    assert any(
        s.startswith("label_join.ctr_falls_with_position: adapter data") for s in report["dataset"]["skipped"]
    )


def test_volume_bounds_must_leave_room() -> None:
    with pytest.raises(ValueError, match=r"volume_min_ratio = 3\.0 is above volume_max_ratio = 2\.0"):
        ValidateConfig(volume_min_ratio=3.0)
