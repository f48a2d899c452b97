"""The Redis online store, for real: a `redis-server` on loopback holds what the SQLite store holds."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import numpy as np
import pytest

from seqrank.config import FeastStoreConfig
from tests.helpers.feature_store import (
    CFG,
    GONE,
    GROWN,
    N_CATEGORIES,
    N_USERS,
    feast_ingested_store,
    make_ingest_dir,
    next_day,
)

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        shutil.which("redis-server") is None,
        reason="redis-server is not installed (.ci/run installs it: apt-get install -y redis-server)",
    ),
]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from benchmarks.bench_features import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="module")
def stores(redis_url, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from components import features

    root = tmp_path_factory.mktemp("redis_stores")
    day1 = make_ingest_dir(root / "day1")
    store_cfg = FeastStoreConfig(online_store="redis", redis_connection=redis_url)
    first = features.run(day1, root / "redis", CFG, store_cfg=store_cfg)
    features.run(day1, root / "sqlite", CFG)
    return {"root": root, "day1": day1, "cfg": store_cfg, "first": first}


def test_redis_serves_what_sqlite_serves(stores):
    from serving.features import OnlineFeatures

    assert stores["first"]["online_store"] == "redis"
    on_redis, on_sqlite = OnlineFeatures(stores["root"] / "redis"), OnlineFeatures(stores["root"] / "sqlite")
    categories = range(1, N_CATEGORIES + 1)
    for user in range(0, N_USERS + 2):
        want, got = on_sqlite.user_sequence(user), on_redis.user_sequence(user)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
        want_cat, got_cat = (
            on_sqlite.category_sequences(user, categories),
            on_redis.category_sequences(user, categories),
        )
        for c in categories:
            for name in want_cat[c]:
                np.testing.assert_array_equal(got_cat[c][name], want_cat[c][name])
    items = np.arange(0, 70)
    for name, values in on_sqlite.item_stats(items).items():
        np.testing.assert_array_equal(on_redis.item_stats(items)[name], values)


def test_feast_reads_the_redis_rows(stores):
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(stores["root"] / "redis"))
    got = store.get_online_features(
        features=["user_behavior:seq_item", "user_profile:age_bucket"], entity_rows=[{"user": 3}]
    ).to_dict()
    reference = (
        FeatureStore(repo_path=str(stores["root"] / "sqlite"))
        .get_online_features(
            features=["user_behavior:seq_item", "user_profile:age_bucket"], entity_rows=[{"user": 3}]
        )
        .to_dict()
    )
    assert got == reference and got["seq_item"][0]


def test_incremental_run_and_push_on_redis(stores):
    from components import features
    from serving.features import OnlineFeatures

    root = stores["root"]
    day2 = next_day(stores["day1"], root / "day2")
    second = features.run(day2, root / "redis", CFG, store_cfg=stores["cfg"])
    assert second["written_users"] == len(GROWN) + 1
    assert second["online"]["user_behavior"]["deleted"] == 1
    on_redis = OnlineFeatures(root / "redis")
    assert on_redis.user_sequence(GONE)["seq_item"].shape == (0,)
    features.run(day2, root / "sqlite2", CFG)
    on_sqlite = OnlineFeatures(root / "sqlite2")
    for user in range(1, N_USERS + 1):
        np.testing.assert_array_equal(
            on_redis.user_sequence(user)["seq_ts"], on_sqlite.user_sequence(user)["seq_ts"]
        )

    # A late pushed behavior (older than the user's newest) still lands: Feast's own Redis write
    # would drop its row, whose stamp is not newer than the stored one.
    before = on_redis.user_sequence(4)
    late = int(before["seq_ts"][-1]) - 1
    on_redis.push([(4, 21, 1, late)])
    after = on_redis.user_sequence(4)
    assert 21 in after["seq_item"].tolist() and len(after["seq_item"]) == min(
        len(before["seq_item"]) + 1, CFG.max_sequence_length
    )
    assert features.run(day2, root / "redis", CFG, store_cfg=stores["cfg"])["written_users"] == 1
    np.testing.assert_array_equal(
        on_redis.user_sequence(4)["seq_item"], on_sqlite.user_sequence(4)["seq_item"]
    )


def _hashes(url: str, db: int) -> dict[bytes, dict[bytes, bytes]]:
    """Every Feast hash in Redis database `db` (the holdings hashes left out), field by field."""
    import redis

    host, port = url.split(":")
    client = redis.Redis(host=host, port=int(port), db=db)
    keys = [k for k in client.scan_iter(count=1_000) if not k.startswith(b"seqrank:held:")]
    return {key: client.hgetall(key) for key in keys}


def test_bulk_hashes_are_byte_identical_to_feast_ingestion(redis_url, tmp_path):
    """The features step's Redis writes (commands packed and sent at once) leave exactly the hashes
    Feast's own DataFrame ingestion leaves, in two databases of the same server."""
    from components import features

    ingest = make_ingest_dir(tmp_path / "ingest")
    ours = FeastStoreConfig(online_store="redis", redis_connection=f"{redis_url},db=1")
    features.run(ingest, tmp_path / "ours", CFG, store_cfg=ours)
    theirs = FeastStoreConfig(online_store="redis", redis_connection=f"{redis_url},db=2")
    feast_ingested_store(ingest, tmp_path / "reference", theirs)

    got, want = _hashes(redis_url, 1), _hashes(redis_url, 2)
    assert len(got) >= N_USERS and got == want


def test_a_command_redis_refuses_fails_the_write_and_leaves_the_connection_usable(redis_url, tmp_path):
    import pyarrow.parquet as pq
    import redis
    from feast import FeatureStore

    from components import features
    from feature_repo import table_path
    from feature_repo.bulk import PUSHED, open_bulk
    from feature_repo.encoding import batch_rows

    store_cfg = FeastStoreConfig(online_store="redis", redis_connection=f"{redis_url},db=3")
    ingest = make_ingest_dir(tmp_path / "ingest")
    features.run(ingest, tmp_path / "feast", CFG, store_cfg=store_cfg)
    bulk = open_bulk(FeatureStore(repo_path=str(tmp_path / "feast")))
    host, port = redis_url.split(":")
    client = redis.Redis(host=host, port=int(port), db=3)
    # One row's hash key holds a string: its HSET gets a WRONGTYPE error reply.
    batch = pq.read_table(table_path(tmp_path / "feast" / "data", "user_profile")).to_batches()[0]
    rows = batch_rows("user_profile", batch)
    victim = rows.keys[1] + bulk.project  # type: ignore[attr-defined]
    client.delete(victim)
    client.set(victim, b"not a hash")
    bulk.hold("user_profile", rows.keys[:2], PUSHED)  # as if pushed since: the next write rewrites them
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        bulk.write("user_profile", rows)
    # The rows around the refused one are written, but the write records no holdings: the next
    # run writes its rows again.
    assert client.hexists(rows.keys[0] + bulk.project, b"_ts:user_profile")  # type: ignore[attr-defined]
    assert bulk.held("user_profile", rows.keys[:2]) == [PUSHED, PUSHED]
    # Every reply was read: the next write on the pool's connection gets its own replies.
    client.delete(victim)
    bulk.write("user_profile", rows)
    assert client.hexists(victim, b"_ts:user_profile")
    assert bulk.held("user_profile", rows.keys[:2]) == rows.digests[:2]
