"""Tests of the synthetic log generator: contracts of its files, realism checks, and the oracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqrank.config import GeneratorConfig
from seqrank.schema import EVENT_TYPES, ORACLE, RAW_EVENT, RAW_ITEMS, RAW_USERS
from seqrank.storage import read_json
from simulator.generator import LAST_N, W_FOCUS, W_LONG_TERM, generate, oracle_auc, simulate

FILES = ("events.jsonl", "events.parquet", "users.parquet", "items.parquet", "oracle.parquet", "summary.json")
SCHEMAS = {"events": RAW_EVENT, "users": RAW_USERS, "items": RAW_ITEMS, "oracle": ORACLE}
MINUTE_MS = 60_000

SMALL = GeneratorConfig(users=300, items=500, categories=12, brands=30, days=10, seed=3, sessions_per_day=1.0)
# Big enough for heavy users and a stable AUC gap, still well under a second to simulate.
MEDIUM = GeneratorConfig(users=800, items=1000, categories=30, brands=60, days=20, seed=11)


@pytest.fixture(scope="module")
def small_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "raw"
    generate(SMALL, out)
    return out


@pytest.fixture(scope="module")
def events(small_out: Path) -> pd.DataFrame:
    return pq.read_table(small_out / "events.parquet").to_pandas()


@pytest.fixture(scope="module")
def medium():
    return simulate(MEDIUM)


def _files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in FILES}


def test_writes_exactly_the_documented_files(small_out: Path) -> None:
    assert sorted(p.name for p in small_out.iterdir()) == sorted(FILES)
    assert not list(small_out.parent.glob(".tmp-*"))


def test_same_seed_gives_identical_files(small_out: Path, tmp_path: Path) -> None:
    generate(SMALL, tmp_path / "again")
    assert _files(tmp_path / "again") == _files(small_out)


def test_different_seed_gives_different_logs(small_out: Path, tmp_path: Path) -> None:
    generate(SMALL.model_copy(update={"seed": SMALL.seed + 1}), tmp_path / "other")
    other = _files(tmp_path / "other")
    mine = _files(small_out)
    for name in ("events.jsonl", "events.parquet", "oracle.parquet", "items.parquet"):
        assert other[name] != mine[name], name


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_parquet_outputs_have_their_schema(small_out: Path, name: str) -> None:
    schema = pq.read_schema(small_out / f"{name}.parquet")
    expected = SCHEMAS[name]
    assert schema.names == expected.names
    for field in expected:
        assert schema.field(field.name).type == field.type, field.name


def test_jsonl_holds_the_same_rows_as_parquet(small_out: Path, events: pd.DataFrame) -> None:
    lines = (small_out / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(events)
    from_json = pd.DataFrame([json.loads(line) for line in lines])
    assert list(from_json.columns) == RAW_EVENT.names
    assert from_json["ts"].dtype == np.int64
    pd.testing.assert_frame_equal(
        from_json.drop(columns="position"), events.drop(columns="position"), check_dtype=False
    )
    pos_json = from_json["position"].to_numpy(dtype=float)
    pos_pq = events["position"].to_numpy(dtype=float)
    np.testing.assert_array_equal(pos_json, pos_pq)  # NaN where null, in both


def test_ids_look_like_raw_ids(events: pd.DataFrame, small_out: Path) -> None:
    assert events["user_id"].str.fullmatch(r"u\d+").all()
    assert events["item_id"].str.fullmatch(r"i\d+").all()
    assert events["category_id"].str.fullmatch(r"c\d+").all()
    assert events["event_id"].is_unique
    items = pq.read_table(small_out / "items.parquet").to_pandas()
    assert items["brand_id"].str.fullmatch(r"b\d+").all()
    assert len(items) == SMALL.items and items["item_id"].is_unique
    assert (items["price"] > 0).all()
    users = pq.read_table(small_out / "users.parquet").to_pandas()
    assert len(users) == SMALL.users and users["user_id"].is_unique
    # Every event's category is its item's category in the side table.
    merged = events.merge(items, on="item_id", suffixes=("", "_item"))
    assert len(merged) == len(events)
    assert (merged["category_id"] == merged["category_id_item"]).all()


def test_summary_counts_match_the_files(small_out: Path, events: pd.DataFrame) -> None:
    summary = read_json(small_out / "summary.json")
    counts = events["event_type"].value_counts().to_dict()
    assert set(counts) <= set(EVENT_TYPES)
    assert summary["counts"] == {t: counts.get(t, 0) for t in EVENT_TYPES}
    assert summary["events"] == len(events)
    assert summary["users"] == SMALL.users and summary["items"] == SMALL.items
    assert summary["active_users"] == events["user_id"].nunique()
    oracle = pq.read_table(small_out / "oracle.parquet")
    assert oracle.num_rows == counts["impression"]
    auc, auc50 = oracle_auc(oracle)
    assert summary["oracle_auc"] == pytest.approx(auc, abs=1e-6)
    assert summary["oracle_last50_auc"] == pytest.approx(auc50, abs=1e-6)
    assert summary["ctr"] == pytest.approx(counts["click"] / counts["impression"], abs=1e-6)


def test_events_sorted_by_ts_within_the_configured_days(events: pd.DataFrame) -> None:
    ts = events["ts"].to_numpy()
    assert (np.diff(ts) >= 0).all()
    start = int(pd.Timestamp(SMALL.start, tz="UTC").timestamp() * 1000)
    assert ts[0] >= start and ts[-1] < start + SMALL.days * 86_400_000


def test_impressions_fill_ranked_slates(events: pd.DataFrame) -> None:
    imps = events[events["event_type"] == "impression"]
    slates = imps.groupby("request_id")
    assert (slates.size() == SMALL.slate_size).all()
    assert (slates["position"].apply(lambda p: sorted(p) == list(range(1, SMALL.slate_size + 1)))).all()
    assert (slates["item_id"].nunique() == SMALL.slate_size).all()  # no item twice in a slate
    assert (slates["ts"].nunique() == 1).all() and (slates["user_id"].nunique() == 1).all()


def test_clicks_follow_the_impression_they_click(events: pd.DataFrame) -> None:
    imps = events[events["event_type"] == "impression"]
    clicks = events[events["event_type"] == "click"]
    joined = clicks.merge(imps, on=["request_id", "position"], suffixes=("", "_imp"), validate="one_to_one")
    assert len(joined) == len(clicks)
    for col in ("user_id", "item_id", "category_id"):
        assert (joined[col] == joined[f"{col}_imp"]).all(), col
    delay = joined["ts"] - joined["ts_imp"]
    assert delay.min() >= 2_000 and delay.max() <= 150_000


def test_cart_fav_buy_follow_a_click_of_the_same_request(events: pd.DataFrame) -> None:
    clicks = events[events["event_type"] == "click"][["request_id", "item_id", "ts"]]
    for kind in ("cart", "fav", "buy"):
        rows = events[events["event_type"] == kind]
        assert len(rows), kind
        assert rows["position"].isna().all()
        joined = rows.merge(clicks, on=["request_id", "item_id"], suffixes=("", "_click"))
        assert len(joined) == len(rows), kind
        assert (joined["ts"] > joined["ts_click"]).all(), kind
    carts = events[events["event_type"] == "cart"][["request_id", "item_id", "ts"]]
    buys = events[events["event_type"] == "buy"].merge(
        carts, on=["request_id", "item_id"], suffixes=("", "_c")
    )
    assert len(buys) == (events["event_type"] == "buy").sum()
    assert (buys["ts"] > buys["ts_c"]).all()
    n = events["event_type"].value_counts()
    assert n["click"] > n["cart"] > n["buy"] and n["click"] > n["fav"]


def test_sessions_are_separated_by_more_than_30_minutes() -> None:
    sim = simulate(SMALL)
    df = pd.DataFrame(
        {
            "user": sim.events.column("user_id").to_numpy(zero_copy_only=False),
            "ts": sim.events.column("ts").to_numpy(),
            "session": sim.event_session,
        }
    ).sort_values(["user", "ts"], kind="stable")
    same_user = df["user"].to_numpy()[1:] == df["user"].to_numpy()[:-1]
    same_session = df["session"].to_numpy()[1:] == df["session"].to_numpy()[:-1]
    gap = np.diff(df["ts"].to_numpy())
    assert (same_user | ~same_session).all()  # a session never spans users
    within, between = gap[same_user & same_session], gap[same_user & ~same_session]
    assert len(within) and len(between)
    assert within.max() < 30 * MINUTE_MS
    assert between.min() > 30 * MINUTE_MS
    # A user's sessions never interleave: a 30-minute sessionizer recovers them exactly.
    assert df.groupby("session")["user"].nunique().eq(1).all()
    assert (same_session[same_user] == (gap[same_user] < 30 * MINUTE_MS)).all()


def test_popularity_is_zipf_like(events: pd.DataFrame, small_out: Path) -> None:
    counts = events.loc[events["event_type"] == "impression", "item_id"].value_counts()
    counts = counts.reindex([f"i{i}" for i in range(SMALL.items)], fill_value=0)
    top = counts.sort_values(ascending=False).iloc[: SMALL.items // 10].sum() / counts.sum()
    assert top > 0.4
    # Uneven categories: the largest holds several times the items of the median one.
    sizes = pq.read_table(small_out / "items.parquet").to_pandas()["category_id"].value_counts()
    assert len(sizes) == SMALL.categories
    assert sizes.max() >= 3 * sizes.median()


def test_ctr_is_realistic(small_out: Path) -> None:
    assert 0.03 <= read_json(small_out / "summary.json")["ctr"] <= 0.12


def test_oracle_beats_last50_oracle(medium) -> None:
    auc, auc50 = oracle_auc(medium.oracle)
    s = medium.summary
    assert 0.03 <= s["ctr"] <= 0.12
    assert auc > auc50 + 0.015
    assert auc50 < s["oracle_history_auc"] < auc
    # Where histories are long, the whole history recovers what the last 50 behaviors miss.
    long = s["auc_by_history"]["200+"]
    assert long["oracle_history_auc"] > long["oracle_last50_auc"] + 0.005
    lt = s["long_term"]
    assert lt["heavy_users"] > 0
    assert lt["heavy_last50_miss_any"] > 0.2
    assert lt["heavy_history_has_all"] > 1 - lt["heavy_last50_miss_any"]


def test_p_click_last50_only_drops_the_unseen_long_term_term(medium) -> None:
    o = medium.oracle
    p = o.column("p_click").to_numpy()
    p50 = o.column("p_click_last50").to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert (p50 <= p).all()
    changed = p50 < p
    assert changed.any() and not changed.all()
    logit = np.log(p / (1 - p)) - np.log(p50 / (1 - p50))
    np.testing.assert_allclose(logit[changed], W_LONG_TERM, atol=1e-6)


def test_p_click_last50_matches_a_brute_force_replay(medium) -> None:
    events = medium.events.to_pandas()
    behaviors = events[events["event_type"] != "impression"]
    by_user = {u: g for u, g in behaviors.groupby("user_id", sort=False)}
    o = medium.oracle.to_pandas()
    o["hist_end"] = medium.hist_end
    cat = events.set_index("event_id").loc[o["event_id"], "category_id"].to_numpy()
    rng = np.random.default_rng(0)
    for row in rng.choice(len(o), size=400, replace=False):
        user, ts = o.at[row, "user_id"], o.at[row, "ts"]
        hist = by_user.get(user, behaviors.iloc[:0])
        before = hist[hist["ts"] < ts]
        assert len(before) == o.at[row, "hist_end"]
        recent = set(before["category_id"].iloc[-LAST_N:])
        lt = {f"c{c}" for c in medium.long_term[int(user[1:])]}
        hidden = cat[row] in lt and cat[row] not in recent
        assert (o.at[row, "p_click_last50"] < o.at[row, "p_click"]) == hidden


def test_p_click_revealed_and_latent_state_match_a_brute_force_replay(medium) -> None:
    # The revealed oracle drops the focus term until the session holds a behavior in the focus
    # category, and the long-term term until the whole history holds one in that category; the
    # latent state names which of them the impression's category is and whether it shows yet.
    events = medium.events.to_pandas()
    events["session"] = medium.event_session
    behaviors = events[events["event_type"] != "impression"]
    by_user = {u: g for u, g in behaviors.groupby("user_id", sort=False)}
    o = medium.oracle.to_pandas()
    imp = events.set_index("event_id").loc[o["event_id"]]
    cat, session = imp["category_id"].to_numpy(), imp["session"].to_numpy()
    p, revealed = o["p_click"].to_numpy(), o["p_click_revealed"].to_numpy()
    dropped = np.log(p / (1 - p)) - np.log(revealed / (1 - revealed))
    rng = np.random.default_rng(1)
    focus_rows = np.flatnonzero(cat == np.array([f"c{c}" for c in medium.focus]))
    rows = np.concatenate(
        [rng.choice(len(o), 300, replace=False), rng.choice(focus_rows, 300, replace=False)]
    )
    kinds, states = set(), set()
    for row in rows:
        user, ts = o.at[row, "user_id"], o.at[row, "ts"]
        hist = by_user.get(user, behaviors.iloc[:0])
        before = hist[hist["ts"] < ts]
        in_session = set(before.loc[before["session"] == session[row], "category_id"])
        lt = {f"c{c}" for c in medium.long_term[int(user[1:])]}
        hidden_focus = cat[row] == f"c{medium.focus[row]}" and cat[row] not in in_session
        hidden_lt = cat[row] in lt and cat[row] not in set(before["category_id"])
        assert dropped[row] == pytest.approx(W_FOCUS * hidden_focus + W_LONG_TERM * hidden_lt, abs=1e-6)
        kinds.add((hidden_focus, hidden_lt))
        if cat[row] in lt:
            state = "long_term_unseen" if hidden_lt else "long_term_seen"
        elif cat[row] == f"c{medium.focus[row]}":
            state = "focus_unseen" if hidden_focus else "focus_seen"
        else:
            state = "neither"
        assert o.at[row, "latent_state"] == state
        states.add(state)
    assert {(True, False), (False, False)} <= kinds
    assert {"long_term_seen", "focus_seen", "focus_unseen", "neither"} <= states
    s = medium.summary
    assert s["oracle_revealed_auc"] < s["oracle_history_auc"]


def test_short_term_focus_shows_in_session_behaviors(medium) -> None:
    st = medium.summary["short_term"]
    assert st["focus_impression_share"] > 0.2
    assert st["focus_seen_in_session"] > 0.3


def test_oracle_auc_handles_ties_and_one_class() -> None:
    table = pa.table(
        {
            "p_click": pa.array([0.1, 0.4, 0.4, 0.9]),
            "p_click_last50": pa.array([0.5, 0.5, 0.5, 0.5]),
            "clicked": pa.array([0, 0, 1, 1], pa.int8()),
        }
    )
    auc, auc50 = oracle_auc(table)
    assert auc == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert auc50 == pytest.approx(0.5)
    only_clicks = table.set_column(2, "clicked", pa.array([1, 1, 1, 1], pa.int8()))
    assert all(np.isnan(oracle_auc(only_clicks)))


def test_invalid_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="long_term_interests"):
        generate(GeneratorConfig(categories=4, long_term_interests=4), tmp_path / "x")
    with pytest.raises(ValueError, match="items"):
        generate(GeneratorConfig(items=5, categories=10), tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
