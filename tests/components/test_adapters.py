"""Public data set adapters: MovieLens (shipped latest-small), Taobao and Amazon on their fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from components import ingest
from seqrank.config import IngestConfig
from seqrank.schema import BEHAVIOR_TYPE_CODE, BEHAVIORS, EXAMPLES, ITEM_STATS, ITEMS, VOCAB
from seqrank.storage import read_table

ROOT = Path(__file__).resolve().parents[2]
MOVIELENS = ROOT / "data" / "movielens-latest-small"
FIXTURES = ROOT / "tests" / "fixtures"
LOOSE = IngestConfig(max_rejected_share=1.0)


def raw_of(out: Path, entity: str) -> dict[int, str]:
    table = read_table(out / "vocab" / f"{entity}.parquet", VOCAB)
    return dict(zip(table.column("index").to_pylist(), table.column("raw").to_pylist(), strict=True))


def dead_letters(out: Path) -> list[dict]:
    rows = []
    for path in sorted((out / "dead_letter").glob("*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines())
    return rows


def assert_adapter_reconciles(manifest: dict) -> None:
    report = manifest["adapter"]
    assert report["rows_read"] == (
        report["rows_used"]
        + sum(report["rows_rejected"].values())
        + report["rows_duplicate"]
        + sum(report["rows_filtered"].values())
    )
    assert manifest["read"] == manifest["accepted"] + manifest["rejected_total"] + manifest["duplicates"]
    # Generated events are clean: anything bad was stopped, with a reason, by the adapter.
    assert manifest["rejected_total"] == 0


def requests_are_one_positive_and_unseen_negatives(out: Path, negatives: int) -> None:
    """Every positive example comes with `negatives` negatives the user never interacted with."""
    examples = read_table(out / "examples", EXAMPLES).to_pandas()
    behaviors = read_table(out / "behaviors", BEHAVIORS).to_pandas()
    touched = {row.user: set(row.item) for row in behaviors.itertuples()}
    sizes = examples.groupby("request_id")["label"].agg(["sum", "count"])
    assert (sizes["sum"] == 1).all()
    assert (sizes["count"] == negatives + 1).all()
    negative = examples[examples["label"] == 0]
    assert not any(
        item in touched[user] for user, item in zip(negative["user"], negative["item"], strict=True)
    )


@pytest.fixture(scope="module")
def movielens_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("movielens") / "out"
    return ingest.run([str(MOVIELENS)], out, IngestConfig(), fmt="movielens"), out


def test_movielens_latest_small_follows_its_protocol(movielens_out: tuple[dict, Path]) -> None:
    manifest, out = movielens_out
    ratings = pd.read_csv(MOVIELENS / "ratings.csv")
    movies = pd.read_csv(MOVIELENS / "movies.csv")
    positives = ratings[ratings["rating"] >= 4.0]
    # The shipped copy is the published one: its README's counts.
    assert (len(ratings), ratings["userId"].nunique(), len(movies)) == (100_836, 610, 9_742)
    assert_adapter_reconciles(manifest)
    assert manifest["adapter"]["rows_read"] == len(ratings) + len(movies)
    assert manifest["adapter"]["rows_used"] == len(positives)
    assert manifest["adapter"]["rows_filtered"]["rating_below_4"] == int((ratings["rating"] < 4.0).sum())
    negatives = IngestConfig().adapter_negatives
    assert manifest["positives"] == len(positives)
    assert manifest["examples"] == len(positives) * (negatives + 1)
    assert manifest["behaviors"] == len(positives)
    assert set(manifest["examples_by_split"]) == {"train", "valid", "test"}
    assert all(manifest["examples_by_split"].values())
    requests_are_one_positive_and_unseen_negatives(out, negatives)

    # Lower ratings are interactions too: never sampled as a negative for that user.
    examples = read_table(out / "examples", EXAMPLES).to_pandas()
    users, items = raw_of(out, "user"), raw_of(out, "item")
    pairs = set(zip(ratings["userId"].astype(str), ratings["movieId"].astype(str), strict=True))
    negative = examples[examples["label"] == 0]
    assert not any(
        (users[u], items[i]) in pairs for u, i in zip(negative["user"], negative["item"], strict=True)
    )

    # Category = first listed genre.
    categories = raw_of(out, "category")
    table = read_table(out / "items", ITEMS).to_pandas()
    first_genre = dict(
        zip(movies["movieId"].astype(str), movies["genres"].str.split("|").str[0], strict=True)
    )
    got = {items[i]: categories[c] for i, c in zip(table["item"], table["category"], strict=True)}
    assert got == first_genre


def test_movielens_rows_that_cannot_be_read_are_dead_letters(tmp_path: Path) -> None:
    src = tmp_path / "ml"
    src.mkdir()
    shutil.copy(MOVIELENS / "movies.csv", src / "movies.csv")
    lines = (MOVIELENS / "ratings.csv").read_text().splitlines()[:200]
    bad = ["1,1,great,964982703", ",1,4.0,964982703", "1,1,4.0", "1,1,4.0,last week"]
    (src / "ratings.csv").write_text("\n".join([*lines, *bad]) + "\n")
    manifest = ingest.run([str(src)], tmp_path / "out", LOOSE, fmt="movielens")
    assert_adapter_reconciles(manifest)
    assert manifest["adapter"]["rows_rejected"] == {
        "wrong_type": 1,
        "empty_id": 1,
        "malformed": 1,
        "bad_timestamp": 1,
    }
    dead = {d["line"]: (d["reason"], d["field"]) for d in dead_letters(tmp_path / "out")}
    assert dead == {
        201: ("wrong_type", "rating"),
        202: ("empty_id", "userId"),
        203: ("malformed", None),
        204: ("bad_timestamp", "timestamp"),
    }


def test_taobao_user_behavior_fixture(tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = ingest.run([str(FIXTURES / "taobao")], out, LOOSE, fmt="taobao")
    assert_adapter_reconciles(manifest)
    report = manifest["adapter"]
    assert report["rows_read"] == 21
    assert report["rows_rejected"] == {
        "malformed": 1,
        "empty_id": 1,
        "unknown_event_type": 1,
        "bad_timestamp": 1,
    }
    assert report["rows_duplicate"] == 1
    assert report["rows_filtered"] == {"outside_period": 1}
    assert report["rows_used"] == 15
    assert manifest["positives"] == 12  # one example per pv
    assert manifest["behaviors"] == 15  # pv, cart, fav and buy are all behaviors
    requests_are_one_positive_and_unseen_negatives(out, LOOSE.adapter_negatives)

    users, items, categories = raw_of(out, "user"), raw_of(out, "item"), raw_of(out, "category")
    behaviors = {users[b["user"]]: b for b in read_table(out / "behaviors", BEHAVIORS).to_pylist()}
    codes = BEHAVIOR_TYPE_CODE
    assert [items[i] for i in behaviors["1"]["item"]] == ["101", "102", "102", "103", "103"]
    assert behaviors["1"]["type"] == [
        codes["click"],
        codes["click"],
        codes["cart"],
        codes["click"],
        codes["buy"],
    ]
    table = read_table(out / "items", ITEMS).to_pylist()
    assert {items[r["item"]]: categories[r["category"]] for r in table}["110"] == "16"
    reasons = {d["line"]: d["reason"] for d in dead_letters(out)}
    assert reasons == {17: "unknown_event_type", 18: "malformed", 19: "empty_id", 20: "bad_timestamp"}


def test_amazon_reviews_fixture_follows_din(tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = ingest.run([str(FIXTURES / "amazon")], out, LOOSE, fmt="amazon")
    assert_adapter_reconciles(manifest)
    report = manifest["adapter"]
    assert report["rows_rejected"] == {"malformed": 2, "empty_id": 1, "bad_timestamp": 1}
    assert report["rows_used"] == 10
    assert manifest["positives"] == 10
    requests_are_one_positive_and_unseen_negatives(out, LOOSE.adapter_negatives)

    # DIN: each user's last review is the test example; here the one before it is valid.
    users, items, categories = raw_of(out, "user"), raw_of(out, "item"), raw_of(out, "category")
    examples = read_table(out / "examples", EXAMPLES).to_pandas()
    positive = examples[examples["label"] == 1]
    split = {
        (users[u], items[i]): s
        for u, i, s in zip(positive["user"], positive["item"], positive["split"], strict=True)
    }
    assert split == {
        ("A1", "B001"): "train",
        ("A1", "B002"): "train",
        ("A1", "B003"): "valid",
        ("A1", "B004"): "test",
        ("A2", "B002"): "train",
        ("A2", "B005"): "valid",
        ("A2", "B001"): "test",
        ("A3", "B003"): "valid",
        ("A3", "B004"): "test",  # two reviews at the last timestamp: both test
        ("A3", "B006"): "test",
    }
    # Negatives share their request's split: a request is never cut across splits.
    assert (examples.groupby("request_id")["split"].nunique() == 1).all()
    # Category is the last entry of the last category path.
    table = read_table(out / "items", ITEMS).to_pylist()
    category = {items[r["item"]]: categories.get(r["category"]) for r in table}
    assert category["B003"] == "Headphones"
    assert category["B001"] == "Cables & Interconnects"
    assert category["B006"] == "Electronics"


def test_adapters_are_deterministic(tmp_path: Path) -> None:
    tables = []
    for run in ("a", "b"):
        ingest.run([str(FIXTURES / "taobao")], tmp_path / run, LOOSE, fmt="taobao")
        tables.append(
            {name: pq.read_table(tmp_path / run / name) for name in ("examples", "behaviors", "item_stats")}
        )
    for name in tables[0]:
        assert tables[0][name].equals(tables[1][name]), name
    other = IngestConfig(max_rejected_share=1.0, adapter_seed=1)
    ingest.run([str(FIXTURES / "taobao")], tmp_path / "c", other, fmt="taobao")
    assert not pq.read_table(tmp_path / "c" / "examples").equals(tables[0]["examples"])


def test_adapter_item_stats_count_generated_impressions(movielens_out: tuple[dict, Path]) -> None:
    manifest, out = movielens_out
    stats = read_table(out / "item_stats", ITEM_STATS).to_pandas()
    assert manifest["item_stats_rows"] == len(stats)
    assert stats["impressions_1d"].sum() == manifest["examples"]
    assert stats["clicks_1d"].sum() == manifest["positives"]
    last = stats.sort_values("ts").groupby("item").last()
    assert (last["impressions_total"] == stats.groupby("item")["impressions_1d"].sum()).all()
    assert np.all(stats["ts"] % 86_400_000 == 0)


def test_adapter_rejections_count_against_the_threshold(tmp_path: Path) -> None:
    # 4 of the fixture's 21 rows cannot be read: over the default 5%.
    with pytest.raises(ingest.IngestRejectedError, match=r"rejected 4 of 21 records"):
        ingest.run([str(FIXTURES / "taobao")], tmp_path / "out", IngestConfig(), fmt="taobao")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dead_letter", "manifest.json"]
