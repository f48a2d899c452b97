"""Incremental materialization: a second run writes only what changed and ends equal to a full rebuild."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers.feature_store import (
    CFG,
    GONE,
    GROWN,
    LATE,
    N_USERS,
    NEXT_DAY,
    make_ingest_dir,
    next_day,
    online_rows,
)


def changed_pairs(day1: Path, day2: Path) -> int:
    """(user, category) rows of day2's table that day1's table lacks or holds otherwise."""
    from components.features import tables

    def pairs(ingest: Path) -> set[tuple]:
        batch = pq.read_table(ingest / "behaviors").combine_chunks().to_batches()[0]
        out = tables.user_category_behavior(batch, CFG.category_k).to_pylist()
        return {tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in row.items()) for row in out}

    return len(pairs(day2) - pairs(day1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from components import features

    root = tmp_path_factory.mktemp("incremental")
    day1 = make_ingest_dir(root / "day1")
    day2 = next_day(day1, root / "day2")
    live = root / "live"
    first = features.run(day1, live, CFG)
    second = features.run(day2, live, CFG)
    third = features.run(day2, live, CFG)
    rebuilt = features.run(day2, root / "rebuilt", CFG)
    return {
        "day1": day1,
        "day2": day2,
        "live": live,
        "rebuilt": root / "rebuilt",
        "first": first,
        "second": second,
        "third": third,
        "full": rebuilt,
    }


def test_second_run_writes_only_changed_users(runs):
    first, second = runs["first"], runs["second"]
    assert first["written_users"] == N_USERS - 1  # every user with behaviors, into a new store
    assert second["written_users"] == len(GROWN) + 1  # the grown users and the late one
    assert second["online"]["user_behavior"]["deleted"] == 1  # GONE
    assert second["online"]["user_behavior"]["unchanged"] == N_USERS - 1 - 1 - len(GROWN) - 1
    # Per (user, category) only rows whose content changed: the grown users' touched category
    # each, the late behavior's category if it is still among that category's latest k.
    assert second["online"]["user_category_behavior"]["written"] == changed_pairs(runs["day1"], runs["day2"])
    # Profiles and statistics did not change: nothing written.
    for view in ("item_profile", "user_profile", "item_stats"):
        assert second["online"][view]["written"] == 0, view
    assert runs["third"]["written_users"] == 0


@pytest.mark.parametrize(
    "view", ["user_behavior", "user_category_behavior", "item_profile", "user_profile", "item_stats"]
)
def test_incremental_store_equals_a_full_rebuild(runs, view):
    got = online_rows(runs["live"], view)
    assert got
    assert got == online_rows(runs["rebuilt"], view)


def test_incremental_reads_the_new_behaviors(runs):
    from serving.features import OnlineFeatures

    live = OnlineFeatures(runs["live"])
    for user in GROWN:
        assert live.user_sequence(user)["seq_ts"][-1] == NEXT_DAY
    assert 14 in live.user_sequence(LATE)["seq_item"].tolist()
    assert live.user_sequence(GONE)["seq_item"].shape == (0,)


def test_idle_users_are_evicted(tmp_path):
    from components import features
    from serving.features import OnlineFeatures

    day1 = make_ingest_dir(tmp_path / "day1")
    day2 = next_day(day1, tmp_path / "day2")
    feast_dir = tmp_path / "feast"
    features.run(day1, feast_dir, CFG)
    # One day of TTL before the newest behavior (NEXT_DAY): only the grown users are active.
    ttl = CFG.model_copy(update={"idle_ttl_days": 1.0})
    summary = features.run(day2, feast_dir, ttl)
    active = N_USERS - 1 - 1  # users with behaviors, less GONE
    assert summary["idle_users"] == active - len(GROWN)
    assert summary["evicted_users"] == active - len(GROWN)
    online = OnlineFeatures(feast_dir)
    assert online.user_sequence(GROWN[0])["seq_ts"][-1] == NEXT_DAY
    assert online.user_sequence(LATE)["seq_item"].shape == (0,)
    held = online.category_sequences(LATE, range(1, 6))
    assert all(v["cat_seq_item"].shape == (0,) for v in held.values())
    assert online.store.get_online_features(
        features=["user_profile:age_bucket"], entity_rows=[{"user": LATE}]
    ).to_dict()["age_bucket"] != [None]  # profiles stay


def test_pushes_then_the_next_run_agree_with_offline(tmp_path):
    from components import features

    day1 = make_ingest_dir(tmp_path / "day1")
    day2 = next_day(day1, tmp_path / "day2")
    live = tmp_path / "live"
    features.run(day1, live, CFG)
    # GROWN[0]'s new behavior arrives by push before the run whose ingest has it; user 4's pushed
    # behavior never reaches the logs (offline is the truth the next run restores).
    features.push_behaviors(live, [(GROWN[0], 13, 1, NEXT_DAY), (4, 15, 2, NEXT_DAY)])
    summary = features.run(day2, live, CFG)
    assert summary["written_users"] == len(GROWN) + 2  # + LATE, + user 4
    features.run(day2, tmp_path / "rebuilt", CFG)
    for view in ("user_behavior", "user_category_behavior"):
        assert online_rows(live, view) == online_rows(tmp_path / "rebuilt", view), view


def test_a_store_feast_filled_is_compared_row_by_row_not_rewritten(tmp_path):
    """The SQLite store is its own record: rows Feast's own ingestion wrote are compared with the
    run's, byte for byte, so a run over the same input writes nothing and the next day's run only
    what changed."""
    from components import features
    from tests.helpers.feature_store import feast_ingested_store

    day1 = make_ingest_dir(tmp_path / "day1")
    day2 = next_day(day1, tmp_path / "day2")
    live = feast_ingested_store(day1, tmp_path / "live")
    same = features.run(day1, live, CFG)
    assert {view: counts["written"] for view, counts in same["online"].items()} == dict.fromkeys(
        same["online"], 0
    )
    assert same["online"]["user_behavior"]["unchanged"] == N_USERS - 1
    nextday = features.run(day2, live, CFG)
    assert nextday["written_users"] == len(GROWN) + 1  # the grown users and the late one
    features.run(day2, tmp_path / "rebuilt", CFG)
    for view in ("user_behavior", "user_category_behavior", "user_profile"):
        assert online_rows(live, view) == online_rows(tmp_path / "rebuilt", view), view


def test_a_row_changed_behind_the_steps_back_is_rewritten(tmp_path):
    """A row whose value or only its event time differs from the run's (another writer, a
    restored backup) is written again; the others are not."""
    import contextlib
    import sqlite3

    from components import features

    day1 = make_ingest_dir(tmp_path / "day1")
    live = tmp_path / "live"
    features.run(day1, live, CFG)
    before = {view: online_rows(live, view) for view in ("user_behavior", "user_profile")}
    with contextlib.closing(sqlite3.connect(live / "online.db")) as conn, conn:
        key = before["user_behavior"][0][0]
        conn.execute(
            f'UPDATE "{CFG.project}_user_behavior" SET event_ts = event_ts - 1 WHERE entity_key = ?', (key,)
        )
        key = before["user_profile"][0][0]
        conn.execute(
            f'UPDATE "{CFG.project}_user_profile" SET value = ? WHERE entity_key = ? AND feature_name = ?',
            (bytes.fromhex("2001"), key, before["user_profile"][0][1]),  # Value(int64_val=1)
        )
    summary = features.run(day1, live, CFG)
    assert summary["online"]["user_behavior"]["written"] == 1
    assert summary["online"]["user_profile"]["written"] == 1
    assert summary["online"]["user_category_behavior"]["written"] == 0
    for view, rows in before.items():
        assert online_rows(live, view) == rows, view


def test_digest_tables_of_earlier_versions_are_dropped(tmp_path):
    import contextlib
    import sqlite3

    from components import features

    day1 = make_ingest_dir(tmp_path / "day1")
    live = tmp_path / "live"
    features.run(day1, live, CFG)
    with contextlib.closing(sqlite3.connect(live / "online.db")) as conn, conn:
        conn.execute(
            f'CREATE TABLE "{CFG.project}_user_behavior__held" (entity_key BLOB PRIMARY KEY, digest BLOB NOT NULL)'
        )
    summary = features.run(day1, live, CFG)
    assert summary["written_users"] == 0
    with contextlib.closing(sqlite3.connect(live / "online.db")) as conn:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert not [n for n in names if n.endswith("__held")]
    assert f"{CFG.project}_user_behavior" in names
