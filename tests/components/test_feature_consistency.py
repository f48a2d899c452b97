"""Offline/online agreement: the online sequences equal what training gathers from behaviors for "now"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from seqrank.config import FeatureConfig
from seqrank.schema import USERS
from seqrank.storage import write_table
from tests.helpers.synthetic import write_training_ingest

# Shorter than the longest synthetic histories (up to 59), so the cut is exercised; chunks smaller
# than the user count, so rows cross chunk boundaries.
CFG = FeatureConfig(
    project="seqrank_consistency", max_sequence_length=25, category_k=6, materialize_chunk_users=17
)
USERS_N = 60


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory):
    from components import features
    from serving.features import OnlineFeatures
    from training.ingest_data import load_ingest

    root = tmp_path_factory.mktemp("consistency")
    ingest_dir = write_training_ingest(root / "ingest", users=USERS_N, categories=8)
    # The training fixture has no users side table; the features step needs one.
    users = {
        "user": np.arange(1, USERS_N + 1),
        "age_bucket": np.zeros(USERS_N, np.int32),
        "gender": ["f"] * USERS_N,
    }
    write_table(pa.table(users), Path(ingest_dir) / "users" / "part-00000.parquet", USERS)
    features.run(ingest_dir, root / "feast", CFG)
    return load_ingest(ingest_dir), OnlineFeatures(root / "feast")


def _training_now(data, user: int, seq_len: int) -> dict[str, np.ndarray]:
    """Training's own gather of the last `seq_len` behaviors before hist_end = all of them."""
    behaviors = data.behaviors
    users = np.array([user])
    index = behaviors.history_index(users, behaviors.lengths(users), seq_len)[0]
    index = index[index > 0]  # drop the PAD slots of a short history
    return {
        "seq_item": behaviors.item[index],
        "seq_category": behaviors.category[index],
        "seq_ts": behaviors.ts[index],
    }


def test_online_sequence_equals_training_for_now(stores):
    data, online = stores
    compared = 0
    for user in range(data.behaviors.num_users):
        want = _training_now(data, user, CFG.max_sequence_length)
        got = online.user_sequence(user)
        for name, values in want.items():
            np.testing.assert_array_equal(got[name], values, err_msg=f"user {user} {name}")
        compared += len(want["seq_item"]) > 0
    # Users with histories were compared, some of them cut to the configured length.
    assert compared > USERS_N // 2
    lengths = data.behaviors.lengths(np.arange(data.behaviors.num_users))
    assert lengths.max() > CFG.max_sequence_length


def test_category_subsequences_equal_training_for_now(stores):
    data, online = stores
    for user in range(1, data.behaviors.num_users):
        full = _training_now(data, user, 10_000)
        categories = sorted({*full["seq_category"].tolist(), 999})
        got = online.category_sequences(user, categories)
        for category in categories:
            mask = full["seq_category"] == category
            np.testing.assert_array_equal(
                got[category]["cat_seq_item"], full["seq_item"][mask][-CFG.category_k :]
            )
            np.testing.assert_array_equal(
                got[category]["cat_seq_ts"], full["seq_ts"][mask][-CFG.category_k :]
            )


def test_pushed_behavior_keeps_online_equal_to_training(stores):
    from training.ingest_data import Behaviors

    # Last in the file on purpose: it changes the shared store for the user it pushes to.
    data, online = stores
    user = int(np.argmax(data.behaviors.lengths(np.arange(data.behaviors.num_users))))
    b = data.behaviors
    start, end = b.offsets[user], b.offsets[user + 1]
    assert start < end
    last_ts = int(b.ts[b.offsets[user + 1] - 1])
    event = (user, 3, 2, last_ts + 1_000)
    online.push([event])
    # The same behavior appended to training's behaviors, as the next ingest run would record it.
    columns = {}
    for name, value in (("item", 3), ("category", 2), ("ts", last_ts + 1_000)):
        flat = getattr(b, name)
        columns[name] = np.concatenate((flat[1:end], [value], flat[end:]))
    lengths = b.lengths(np.arange(b.num_users))
    lengths[user] += 1
    updated = Behaviors.from_lists(np.arange(b.num_users), lengths, columns, num_users=b.num_users)
    want = _training_now(type(data)(data.examples, updated, data.vocab_sizes), user, CFG.max_sequence_length)
    got = online.user_sequence(user)
    for name, values in want.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
