"""Features step: feature tables from a tiny ingest output, Feast apply, online reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from seqrank.schema import ITEM_STATS, ITEMS, USERS
from tests.helpers.feature_store import (
    CFG,
    DAY_MS,
    EMPTY_USER,
    LONG_USER,
    N_CATEGORIES,
    N_ITEMS,
    N_USERS,
    STATS_DAYS,
    expected_tail,
    make_ingest_dir,
)


@pytest.fixture(scope="module")
def feature_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    from components import features

    root = tmp_path_factory.mktemp("features")
    ingest_dir = make_ingest_dir(root / "ingest")
    feast_dir = root / "feast"
    summary = features.run(ingest_dir, feast_dir, CFG)
    return ingest_dir, feast_dir, summary


@pytest.fixture(scope="module")
def online(feature_store):
    from serving.features import OnlineFeatures

    return OnlineFeatures(feature_store[1])


def test_summary_and_layout(feature_store):
    _, feast_dir, summary = feature_store
    assert summary["users"] == N_USERS - 1  # the user without behaviors has no sequence row
    assert summary["rows"]["item_profile"] == N_ITEMS
    assert summary["rows"]["user_profile"] == N_USERS
    assert summary["seconds"]["materialize"] >= 0
    config = yaml.safe_load((feast_dir / "feature_store.yaml").read_text())
    assert config["online_store"] == {"type": "sqlite", "path": "online.db"}
    assert config["registry"]["path"] == "registry.db"
    assert (feast_dir / "online.db").is_file() and (feast_dir / "registry.db").is_file()
    assert summary["rows"]["item_stats"] == N_ITEMS * STATS_DAYS
    assert sorted(p.name for p in (feast_dir / "data").iterdir()) == [
        "item_profile.parquet",
        "item_stats.parquet",
        "user_behavior.parquet",
        "user_category_behavior.parquet",
        "user_profile.parquet",
    ]


@pytest.mark.parametrize("user", [LONG_USER, 3, 7, N_USERS])
def test_online_sequence_is_last_n_behaviors(feature_store, online, user):
    ingest_dir = feature_store[0]
    got = online.user_sequence(user)
    want = expected_tail(ingest_dir, user, CFG.max_sequence_length)
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == np.int64
        np.testing.assert_array_equal(got[name], want[name])
    assert len(online.user_sequence(LONG_USER)["seq_item"]) == CFG.max_sequence_length


def test_user_behavior_timestamp_is_last_behavior(feature_store):
    ingest_dir, feast_dir, _ = feature_store
    table = pq.read_table(feast_dir / "data" / "user_behavior.parquet").to_pylist()
    row = next(r for r in table if r["user"] == LONG_USER)
    last_ms = int(expected_tail(ingest_dir, LONG_USER, 1)["seq_ts"][0])
    assert int(row["event_timestamp"].timestamp() * 1000) == last_ms


@pytest.mark.parametrize("user", [EMPTY_USER, 999, 0])
def test_unknown_or_empty_user_gets_empty_arrays(online, user):
    got = online.user_sequence(user)
    assert set(got) == {"seq_item", "seq_category", "seq_ts"}
    assert all(v.dtype == np.int64 and v.shape == (0,) for v in got.values())


def test_category_subsequence(feature_store, online):
    ingest_dir = feature_store[0]
    full = expected_tail(ingest_dir, LONG_USER, 10_000)
    categories = [*range(1, N_CATEGORIES + 1), 99]
    got = online.category_sequences(LONG_USER, categories)
    assert sorted(got) == categories
    for category in categories:
        mask = full["seq_category"] == category
        np.testing.assert_array_equal(
            got[category]["cat_seq_item"], full["seq_item"][mask][-CFG.category_k :]
        )
        np.testing.assert_array_equal(got[category]["cat_seq_ts"], full["seq_ts"][mask][-CFG.category_k :])
    assert got[99]["cat_seq_item"].shape == (0,)


def test_fast_read_matches_feast_get_online_features(feature_store, online):
    response = online.store.get_online_features(
        features=[f"user_behavior:{name}" for name in ("seq_item", "seq_category", "seq_ts")]
        + ["item_profile:brand", "user_profile:age_bucket"],
        entity_rows=[{"user": LONG_USER, "item": 5}],
    ).to_dict()
    fast = online.user_sequence(LONG_USER)
    for name, values in fast.items():
        np.testing.assert_array_equal(np.array(response[name][0], dtype=np.int64), values)
    items = pq.read_table(feature_store[0] / "items").to_pylist()
    assert response["brand"] == [items[4]["brand"]]
    assert response["age_bucket"][0] is not None


def test_rerun_on_the_same_store_is_idempotent(feature_store, online):
    from components import features

    ingest_dir, feast_dir, first = feature_store
    before = {v: pq.read_table(feast_dir / "data" / f"{v}.parquet") for v in first["rows"]}
    again = features.run(ingest_dir, feast_dir, CFG)
    assert again["rows"] == first["rows"]
    for view, table in before.items():
        assert pq.read_table(feast_dir / "data" / f"{view}.parquet").equals(table), view
    want = expected_tail(ingest_dir, LONG_USER, CFG.max_sequence_length)
    np.testing.assert_array_equal(online.user_sequence(LONG_USER)["seq_item"], want["seq_item"])
    view = online.store.registry.get_feature_view("user_behavior", online.store.project)
    assert view.materialization_intervals


def _contract_features() -> dict[str, dict[str, pa.DataType]]:
    """Per view, the features seqrank.schema says it holds: the contracts ingest and training use."""
    from seqrank.schema import SEQUENCE_FEATURES

    def without(schema: pa.Schema, *names: str) -> dict[str, pa.DataType]:
        return {f.name: f.type for f in schema if f.name not in names}

    return {
        "user_behavior": dict(SEQUENCE_FEATURES),
        "user_category_behavior": {
            "cat_seq_item": SEQUENCE_FEATURES["seq_item"],
            "cat_seq_ts": SEQUENCE_FEATURES["seq_ts"],
        },
        "item_profile": without(ITEMS, "item"),
        "user_profile": without(USERS, "user"),
        "item_stats": {**without(ITEM_STATS, "item", "ts"), "ctr_total": pa.float64()},
    }


def test_applied_views_agree_with_the_schema_contracts(feature_store):
    from feast import FeatureStore
    from feast.type_map import pa_to_feast_value_type

    # Read back from the registry, so a view edited by hand or a stale apply shows up as drift.
    store = FeatureStore(repo_path=str(feature_store[1]))
    contracts = _contract_features()
    assert {v.name for v in store.list_feature_views()} == set(contracts)
    for name, expected in contracts.items():
        view = store.get_feature_view(name)
        got = {f.name: f.dtype.to_value_type() for f in view.features}
        want = {k: pa_to_feast_value_type(str(t)) for k, t in expected.items()}
        assert got == want, name


def test_feature_tables_agree_with_the_schema_contracts(feature_store):
    feast_dir = feature_store[1]
    for view, expected in _contract_features().items():
        schema = pq.read_schema(feast_dir / "data" / f"{view}.parquet")
        for name, dtype in expected.items():
            assert schema.field(name).type.equals(dtype), (view, name)


def test_training_history_keys_match_sequence_features():
    from seqrank.schema import SEQUENCE_FEATURES
    from training.batch import HISTORY_KEYS

    # Serving feeds seq_x where training fed hist_x: the suffixes must line up one to one.
    assert [k.removeprefix("hist_") for k in HISTORY_KEYS] == [
        k.removeprefix("seq_") for k in SEQUENCE_FEATURES
    ]


def test_services_are_versioned_per_family(feature_store):
    from feast import FeatureStore

    from feature_repo import SERVICES

    store = FeatureStore(repo_path=str(feature_store[1]))
    assert {s.name for s in store.list_feature_services()} == set(SERVICES)
    for name in SERVICES:
        service = store.get_feature_service(name)
        assert {p.name for p in service.feature_view_projections} == set(SERVICES[name]), name
    # v1 stays what the first models were trained on; item statistics arrive with v2.
    assert "item_stats" not in SERVICES["din_v1"] and "item_stats" in SERVICES["din_v2"]
    assert "user_category_behavior" in SERVICES["sim_v2"]


def test_item_stats_online_holds_the_latest_snapshot(feature_store):
    from feast import FeatureStore

    ingest_dir, feast_dir, _ = feature_store
    stats = pq.read_table(ingest_dir / "item_stats").to_pylist()
    last = max((r for r in stats if r["item"] == 7), key=lambda r: r["ts"])
    store = FeatureStore(repo_path=str(feast_dir))
    got = store.get_online_features(
        features=["item_stats:clicks_total", "item_stats:impressions_total", "item_stats:ctr_total"],
        entity_rows=[{"item": 7}],
    ).to_dict()
    assert got["clicks_total"] == [last["clicks_total"]]
    assert got["impressions_total"] == [last["impressions_total"]]
    want_ctr = last["clicks_total"] / last["impressions_total"] if last["impressions_total"] else 0.0
    assert got["ctr_total"][0] == pytest.approx(want_ctr)


def test_historical_item_stats_are_point_in_time(feature_store):
    import pandas as pd

    from components import features

    ingest_dir, feast_dir, _ = feature_store
    stats = sorted(
        (r for r in pq.read_table(ingest_dir / "item_stats").to_pylist() if r["item"] == 5),
        key=lambda r: r["ts"],
    )
    day1, day2 = stats[0]["ts"], stats[1]["ts"]
    # Before the first snapshot; exactly at it; an hour after the second; long after the last.
    when = [day1 - 1, day1, day2 + 3_600_000, stats[-1]["ts"] + 30 * DAY_MS]
    entity_df = pd.DataFrame(
        {
            "user": [3, 3, 4, 5],
            "item": [5, 5, 5, 5],
            "event_timestamp": pd.to_datetime(when, unit="ms", utc=True),
        }
    )
    out = features.historical_features(feast_dir, entity_df)
    out = out.assign(ms=out["event_timestamp"].map(lambda t: t.value // 1_000_000)).set_index("ms")
    assert pd.isna(out.loc[day1 - 1, "clicks_total"])
    # Feast joins snapshots stamped at or before the example's time: equal counts as known.
    assert out.loc[day1, "clicks_total"] == stats[0]["clicks_total"]
    assert out.loc[day2 + 3_600_000, "clicks_total"] == stats[1]["clicks_total"]
    assert out.loc[when[-1], "impressions_total"] == stats[-1]["impressions_total"]
    # Profiles are stamped at the epoch, so every example sees them.
    users = {r["user"]: r for r in pq.read_table(ingest_dir / "users").to_pylist()}
    items = {r["item"]: r for r in pq.read_table(ingest_dir / "items").to_pylist()}
    assert (out.loc[day1 - 1, "age_bucket"], out.loc[day1 - 1, "brand"]) == (
        users[3]["age_bucket"],
        items[5]["brand"],
    )


def test_historical_features_needs_entity_columns(feature_store):
    import pandas as pd

    from components import features

    with pytest.raises(ValueError, match="event_timestamp"):
        features.historical_features(feature_store[1], pd.DataFrame({"user": [1], "item": [1]}))


def test_missing_item_stats_leaves_the_view_empty(tmp_path):
    from feast import FeatureStore

    from components import features

    ingest_dir = make_ingest_dir(tmp_path / "ingest", item_stats=False)
    summary = features.run(ingest_dir, tmp_path / "feast", CFG)
    assert summary["rows"]["item_stats"] == 0
    assert summary["users"] == N_USERS - 1
    store = FeatureStore(repo_path=str(tmp_path / "feast"))
    got = store.get_online_features(features=["item_stats:clicks_total"], entity_rows=[{"item": 3}]).to_dict()
    assert got["clicks_total"] == [None]


def test_redis_store_config_loads_as_repo_config(tmp_path):
    """The cluster store is chosen in the config's infra section and is the same repo otherwise."""
    from feast.repo_config import load_repo_config

    from feature_repo import STORE_YAML, store_config, write_store_config
    from seqrank.config import FeastStoreConfig

    cluster = FeastStoreConfig(
        online_store="redis",
        redis_connection="redis-master:6379,db=0",
        registry="s3://bucket/feast/registry.db",
    )
    local, remote = store_config("seqrank"), store_config("seqrank", cluster)
    # Only where the registry and the online store live may differ between laptop and cluster.
    for key in ("project", "provider", "offline_store", "entity_key_serialization_version"):
        assert remote[key] == local[key], key

    write_store_config(tmp_path, "seqrank", cluster)
    config = load_repo_config(tmp_path, tmp_path / STORE_YAML)
    assert config.project == "seqrank"
    assert config.online_store.type == "redis"
    assert config.online_store.redis_type == "redis"
    assert config.online_store.connection_string == "redis-master:6379,db=0"
    assert config.registry.path == "s3://bucket/feast/registry.db"
    assert config.offline_store.type == "file"


def test_scan_reads_only_the_columns_asked_and_still_checks_the_whole_schema(tmp_path):
    from components.features import tables
    from seqrank.schema import BEHAVIORS

    ingest_dir = make_ingest_dir(tmp_path / "ingest")
    behaviors = ingest_dir / "behaviors"
    used = tables.READS["user_behavior"]
    full = pa.Table.from_batches(list(tables.scan(behaviors, BEHAVIORS, 1_000)))
    part = pa.Table.from_batches(list(tables.scan(behaviors, BEHAVIORS, 1_000, used)))
    assert part.schema.names == [name for name in BEHAVIORS.names if name in used]
    assert part.equals(full.select(part.schema.names))
    # A file without a column the sequence tables never read is still not a behaviors/ output.
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(full.drop_columns(["session"]), bad / "part-00000.parquet")
    with pytest.raises(ValueError, match=r"missing columns \['session'\]"):
        next(tables.scan(bad, BEHAVIORS, 1_000, used))
