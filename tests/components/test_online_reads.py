"""The service's online reads (serving.features): the direct SQLite path equals Feast's provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.feature_store import CFG, EMPTY_USER, LONG_USER, N_CATEGORIES, N_ITEMS, make_ingest_dir


@pytest.fixture(scope="module")
def feast_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from components import features

    root = tmp_path_factory.mktemp("reads")
    features.run(make_ingest_dir(root / "ingest"), root / "feast", CFG)
    return root / "feast"


@pytest.fixture(scope="module")
def readers(feast_dir: Path):
    from serving.features import OnlineFeatures

    direct, provider = OnlineFeatures(feast_dir), OnlineFeatures(feast_dir)
    assert direct._sqlite is not None  # the SQLite store gets the direct path
    provider._sqlite = None  # the same store through Feast's provider.online_read
    return direct, provider


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("user", [LONG_USER, EMPTY_USER, 10_000], ids=["long", "empty", "unknown"])
def test_user_and_category_reads_equal_the_providers(readers, user: int) -> None:
    direct, provider = readers
    _same(direct.user_sequence(user), provider.user_sequence(user))
    categories = list(range(1, N_CATEGORIES + 3))  # two categories the store has never seen
    got, expected = direct.category_sequences(user, categories), provider.category_sequences(user, categories)
    assert got.keys() == expected.keys() == set(categories)
    for category in categories:
        _same(got[category], expected[category])
    if user == LONG_USER:
        assert any(len(got[c]["cat_seq_item"]) for c in categories)
        assert len(direct.user_sequence(user)["seq_item"]) > 0


def test_item_stats_equal_the_providers_and_feasts_own_api(readers) -> None:
    direct, provider = readers
    items = np.array([0, 3, 1, 3, N_ITEMS - 1, N_ITEMS + 50], dtype=np.int64)  # PAD, repeats, unknown
    got = direct.item_stats(items)
    _same(got, provider.item_stats(items))
    response = direct.store.get_online_features(
        features=[f"item_stats:{name}" for name in got], entity_rows=[{"item": 3}]
    ).to_dict()
    for name, values in got.items():
        assert values[1] == values[3] == (response[name][0] or 0)
