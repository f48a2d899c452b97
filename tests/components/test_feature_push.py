"""Streaming updates: behaviors pushed through the Feast push sources reach the next online lookup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.feature_store import CFG, LONG_USER, N_CATEGORIES, make_ingest_dir

LATER = 1_800_000_000_000  # after every generated behavior


@pytest.fixture()
def store(tmp_path: Path) -> tuple[Path, object]:
    from components import features
    from serving.features import OnlineFeatures

    features.run(make_ingest_dir(tmp_path / "ingest"), tmp_path / "feast", CFG)
    return tmp_path / "feast", OnlineFeatures(tmp_path / "feast")


def test_push_then_read_both_views(store):
    from components import features

    feast_dir, online = store
    before = online.user_sequence(3)
    category = int(before["seq_category"][-1])
    before_cat = online.category_sequences(3, [category])[category]

    pushed = features.push_behaviors(feast_dir, [(3, 42, category, LATER)])
    assert pushed == {"user_behavior": 1, "user_category_behavior": 1}

    after = online.user_sequence(3)
    cap = CFG.max_sequence_length
    np.testing.assert_array_equal(after["seq_item"], [*before["seq_item"], 42][-cap:])
    np.testing.assert_array_equal(after["seq_category"], [*before["seq_category"], category][-cap:])
    np.testing.assert_array_equal(after["seq_ts"], [*before["seq_ts"], LATER][-cap:])
    got_cat = online.category_sequences(3, [category])[category]
    want = np.append(before_cat["cat_seq_item"], 42)[-CFG.category_k :]
    np.testing.assert_array_equal(got_cat["cat_seq_item"], want)
    assert got_cat["cat_seq_ts"][-1] == LATER


def test_pushed_behaviors_are_ordered_by_time(store):
    _, online = store
    before = online.user_sequence(4)
    assert len(before["seq_ts"]) >= 2
    # One behavior older than the user's latest, two newer ones given out of order, in a new category.
    middle = int(before["seq_ts"][-2]) + 1
    online.push([(4, 11, 99, LATER + 5), (4, 12, 99, middle), (4, 13, 99, LATER)])
    after = online.user_sequence(4)
    assert np.all(np.diff(after["seq_ts"]) >= 0)
    np.testing.assert_array_equal(after["seq_item"][-4:], [12, before["seq_item"][-1], 13, 11])
    cat = online.category_sequences(4, [99])[99]
    assert np.all(np.diff(cat["cat_seq_ts"]) >= 0)
    np.testing.assert_array_equal(cat["cat_seq_item"], [12, 13, 11])


def test_caps_are_respected(store):
    _, online = store
    before = online.user_sequence(LONG_USER)
    assert len(before["seq_item"]) == CFG.max_sequence_length
    category = N_CATEGORIES  # the long user has more than category_k behaviors in every category
    before_cat = online.category_sequences(LONG_USER, [category])[category]
    assert len(before_cat["cat_seq_item"]) == CFG.category_k

    events = [(LONG_USER, 50 + i, category, LATER + i) for i in range(3)]
    online.push(events)
    after = online.user_sequence(LONG_USER)
    assert len(after["seq_item"]) == CFG.max_sequence_length
    np.testing.assert_array_equal(after["seq_item"], [*before["seq_item"][3:], 50, 51, 52])
    got_cat = online.category_sequences(LONG_USER, [category])[category]
    np.testing.assert_array_equal(got_cat["cat_seq_item"], [before_cat["cat_seq_item"][-1], 50, 51, 52])


def test_push_creates_rows_for_new_users_and_categories(store):
    _, online = store
    assert online.user_sequence(500)["seq_item"].shape == (0,)
    online.push([(500, 7, 99, LATER), (500, 8, 2, LATER + 1)])
    got = online.user_sequence(500)
    np.testing.assert_array_equal(got["seq_item"], [7, 8])
    np.testing.assert_array_equal(got["seq_category"], [99, 2])
    cats = online.category_sequences(500, [2, 3, 99])
    np.testing.assert_array_equal(cats[99]["cat_seq_item"], [7])
    np.testing.assert_array_equal(cats[2]["cat_seq_item"], [8])
    assert cats[3]["cat_seq_item"].shape == (0,)
    # Another user's rows are untouched.
    assert online.user_sequence(501)["seq_item"].shape == (0,)


def test_push_is_visible_to_another_reader(store):
    from components import features
    from serving.features import OnlineFeatures

    feast_dir, _ = store
    features.push_behaviors(feast_dir, [(6, 31, 2, LATER)])
    fresh = OnlineFeatures(feast_dir)
    assert fresh.user_sequence(6)["seq_item"][-1] == 31
    assert fresh.category_sequences(6, [2])[2]["cat_seq_item"][-1] == 31


def test_push_rejects_the_padding_user(store):
    _, online = store
    with pytest.raises(ValueError, match="user index 0"):
        online.push([(0, 1, 1, LATER)])
    assert online.push([]) == {"user_behavior": 0, "user_category_behavior": 0}


def test_cli_materialize_push_get(tmp_path):
    import json

    from click.testing import CliRunner

    from seqrank.cli import main

    state = ["--set", f"state_dir={tmp_path / 'state'}"]
    runner = CliRunner()
    ingest_dir = make_ingest_dir(tmp_path / "ingest")
    done = runner.invoke(main, ["features", "materialize", "--data", str(ingest_dir), *state])
    assert done.exit_code == 0, done.output
    args = ["--user", "5", "--item", "17", "--category", "3", "--ts", str(LATER), "--index", *state]
    pushed = runner.invoke(main, ["features", "push", *args])
    assert pushed.exit_code == 0, pushed.output
    got = runner.invoke(
        main, ["features", "get", "--user", "5", "--category", "3", "--category", "77", "--index", *state]
    )
    assert got.exit_code == 0, got.output
    result = json.loads(got.output.strip().splitlines()[-1])
    assert result["sequence"]["seq_item"][-1] == 17
    assert result["categories"]["3"]["cat_seq_item"][-1] == 17
    assert result["categories"]["77"]["cat_seq_item"] == []
    # Raw ids go through the state's vocab; with none there the command says what to do.
    raw = runner.invoke(main, ["features", "get", "--user", "u5", *state])
    assert raw.exit_code != 0 and "--index" in raw.output
