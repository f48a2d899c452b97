"""Loading an ingest output and gathering point-in-time histories into batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqrank.schema import EXAMPLES, PAD
from seqrank.storage import write_table
from tests.helpers.synthetic import write_training_ingest
from training.batch import BATCH_KEYS
from training.batching import BatchBuilder
from training.ingest_data import Behaviors, Examples, IngestData, load_ingest


@pytest.fixture(scope="module")
def ingest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_ingest(tmp_path_factory.mktemp("ingest") / "ingest", users=60, impressions=20)


@pytest.fixture(scope="module")
def data(ingest_dir: Path) -> IngestData:
    return load_ingest(ingest_dir)


def naive_history(data: IngestData, user: int, hist_end: int, seq_len: int, column: str) -> list[int]:
    """One example at a time, straight from the definition behaviors[user][:hist_end]."""
    b = data.behaviors
    values = getattr(b, column)[b.offsets[user] : b.offsets[user + 1]].tolist()[:hist_end][-seq_len:]
    return [PAD] * (seq_len - len(values)) + values


def tiny_data(hist_end: list[int], seq_len_items: list[int] | None = None) -> IngestData:
    """User 1 has behaviors 11..15 (ts 100..500); user 2 has none; one example per hist_end."""
    items = np.array(seq_len_items or [11, 12, 13, 14, 15])
    behaviors = Behaviors.from_lists(
        users=np.array([1, 2]),
        lengths=np.array([len(items), 0]),
        columns={"item": items, "category": items % 3 + 1, "ts": (np.arange(len(items)) + 1) * 100},
        num_users=3,
    )
    n = len(hist_end)
    examples = Examples(
        user=np.ones(n, dtype=np.int64),
        item=np.full(n, 3, dtype=np.int64),
        category=np.ones(n, dtype=np.int64),
        ts=np.full(n, 1000, dtype=np.int64),
        label=np.zeros(n, dtype=np.float32),
        hist_end=np.array(hist_end, dtype=np.int64),
        position=np.zeros(n, dtype=np.int32),
        session=np.zeros(n, dtype=np.int32),
        split=np.zeros(n, dtype=np.int8),
    )
    return IngestData(examples, behaviors, {"user": 3, "item": 16, "category": 4})


def test_load_reads_columns_csr_and_vocab_sizes(data: IngestData, ingest_dir: Path) -> None:
    examples = pq.read_table(ingest_dir / "examples")
    assert len(data.examples) == examples.num_rows
    assert data.examples.user.dtype == np.int64 and data.examples.label.dtype == np.float32
    assert data.vocab_sizes == {"user": 63, "item": 301, "category": 13, "brand": 6}
    assert data.behaviors.num_users == 63
    assert data.manifest["users"] == 60
    sizes = [len(data.split(name)) for name in ("train", "valid", "test")]
    assert sum(sizes) == examples.num_rows and min(sizes) > 0

    # The file lists users in reverse order; the CSR ranges must still hold each user's own list.
    rows = pq.read_table(ingest_dir / "behaviors").to_pylist()
    b = data.behaviors
    for row in rows:
        user = row["user"]
        assert b.item[b.offsets[user] : b.offsets[user + 1]].tolist() == row["item"]
        assert b.ts[b.offsets[user] : b.offsets[user + 1]].tolist() == row["ts"]
    # Users without behaviors (1..3) or without a behaviors row (61, 62), and PAD, have empty ranges.
    assert b.lengths(np.array([0, 1, 2, 3, 61, 62])).tolist() == [0] * 6


def test_history_is_right_aligned_padded_and_strictly_before() -> None:
    data = tiny_data(hist_end=[3, 0, 5, 1])
    batch, _ = BatchBuilder(data, seq_len=4).build(data.examples, slice(None))
    assert batch["hist_item"].tolist() == [
        [PAD, 11, 12, 13],
        [PAD, PAD, PAD, PAD],
        [12, 13, 14, 15],
        [PAD, PAD, PAD, 11],
    ]
    assert batch["hist_ts"].tolist()[0] == [PAD, 100, 200, 300]
    short, _ = BatchBuilder(data, seq_len=2).build(data.examples, slice(None))
    assert short["hist_item"].tolist() == [[12, 13], [PAD, PAD], [14, 15], [PAD, 11]]


def test_vectorized_gather_matches_the_definition(data: IngestData) -> None:
    builder = BatchBuilder(data, seq_len=7)
    index = np.random.default_rng(0).permutation(len(data.examples))[:300]
    batch, labels = builder.build(data.examples, index)
    assert labels.tolist() == data.examples.label[index].tolist()
    for row, i in enumerate(index):
        user, end = int(data.examples.user[i]), int(data.examples.hist_end[i])
        for key in ("hist_item", "hist_category", "hist_ts"):
            expected = naive_history(data, user, end, 7, key.removeprefix("hist_"))
            assert batch[key][row].tolist() == expected, (key, i)


def test_long_history_and_category_search_match_the_definition(data: IngestData) -> None:
    lengths = {"hist": 3, "long": 40, "cat": 6}
    builder = BatchBuilder(data, lengths, keys=("category", "long_item", "long_ts", "cat_item", "cat_ts"))
    index = np.random.default_rng(1).permutation(len(data.examples))[:300]
    batch, _ = builder.build(data.examples, index)
    assert batch["long_item"].shape == (300, 40) and batch["cat_item"].shape == (300, 6)
    b = data.behaviors
    hits = 0
    for row, i in enumerate(index):
        user, end = int(data.examples.user[i]), int(data.examples.hist_end[i])
        assert batch["long_item"][row].tolist() == naive_history(data, user, end, 40, "item")
        # Hard search: the user's behaviors before the impression in the candidate's category.
        span = slice(b.offsets[user], b.offsets[user] + end)
        same = b.category[span] == data.examples.category[i]
        for key in ("cat_item", "cat_ts"):
            values = getattr(b, key.removeprefix("cat_"))[span][same].tolist()[-6:]
            assert batch[key][row].tolist() == [PAD] * (6 - len(values)) + values, (key, i)
        hits += int(same.any())
    assert hits > 50  # the search found something for many examples, not only empty rows


def test_category_search_on_tiny_data() -> None:
    # User 1's behaviors 11..15 have categories 3, 1, 2, 3, 1 (item % 3 + 1).
    data = tiny_data(hist_end=[5, 4, 1, 0])
    batch, _ = BatchBuilder(data, {"hist": 2, "cat": 3}, keys=("cat_item", "cat_ts")).build(
        data.examples, slice(None)
    )
    assert batch["cat_item"].tolist() == [
        [PAD, 12, 15],
        [PAD, PAD, 12],
        [PAD, PAD, PAD],
        [PAD, PAD, PAD],
    ]
    assert batch["cat_ts"].tolist()[0] == [PAD, 200, 500]


def test_history_never_reaches_the_impression(data: IngestData) -> None:
    batch, _ = BatchBuilder(data, seq_len=50).build(data.examples, slice(None))
    real = batch["hist_item"] != PAD
    ts = batch["ts"].unsqueeze(1).expand_as(batch["hist_ts"])
    assert real.any()
    assert bool((batch["hist_ts"][real] < ts[real]).all())


def test_batches_cover_every_example_once(data: IngestData) -> None:
    builder = BatchBuilder(data, seq_len=5, keys=("user", "item", "hist_item"))
    train = data.split("train")
    ordered = list(builder.batches(train, 64))
    assert [len(labels) for _, labels in ordered][:-1] == [64] * (len(ordered) - 1)
    assert np.concatenate([b["item"].numpy() for b, _ in ordered]).tolist() == train.item.tolist()
    assert set(ordered[0][0]) == {"user", "item", "hist_item"}

    def shuffled(seed: int) -> list[int]:
        batches = builder.batches(train, 64, shuffle=True, rng=np.random.default_rng(seed))
        return np.concatenate([b["user"].numpy() for b, _ in batches]).tolist()

    assert sorted(shuffled(0)) == sorted(train.user.tolist())
    assert shuffled(0) == shuffled(0)
    assert shuffled(0) != shuffled(1)
    assert len(list(builder.batches(train, 64, drop_last=True))) == len(train) // 64


def test_unknown_batch_key_is_rejected(data: IngestData) -> None:
    with pytest.raises(ValueError, match="hist_price"):
        BatchBuilder(data, seq_len=5, keys=("user", "hist_price"))
    assert set(BATCH_KEYS) >= {"user", "item", "category", "hist_item", "hist_category", "hist_ts"}


def test_restricted_to_maps_unseen_ids_to_pad() -> None:
    data = tiny_data(hist_end=[5]).restricted_to({"item": 14, "user": 3})
    batch, _ = BatchBuilder(data, seq_len=5).build(data.examples, slice(None))
    assert batch["hist_item"].tolist() == [[11, 12, 13, PAD, PAD]]
    assert batch["item"].tolist() == [3]
    assert batch["hist_ts"].tolist() == [[100, 200, 300, 400, 500]]  # ts are not ids


def test_split_errors(data: IngestData) -> None:
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        data.split("dev")
    only_train = tiny_data(hist_end=[1, 2])
    with pytest.raises(ValueError, match="split 'valid' has no examples"):
        only_train.split("valid")


def test_inconsistent_data_is_rejected() -> None:
    with pytest.raises(ValueError, match="hist_end"):
        tiny_data(hist_end=[6])
    with pytest.raises(ValueError, match="no examples"):
        tiny_data(hist_end=[])


def test_empty_examples_file_is_rejected(tmp_path: Path, ingest_dir: Path) -> None:
    import shutil

    target = tmp_path / "ingest"
    shutil.copytree(ingest_dir, target)
    shutil.rmtree(target / "examples")
    write_table(EXAMPLES.empty_table(), target / "examples" / "part-00000.parquet", EXAMPLES)
    with pytest.raises(ValueError, match="holds no rows"):
        load_ingest(target)


def test_ids_outside_the_vocab_are_rejected(tmp_path: Path, ingest_dir: Path) -> None:
    import shutil

    target = tmp_path / "ingest"
    shutil.copytree(ingest_dir, target)
    table = pq.read_table(target / "examples")
    items = table.column("item").to_numpy().copy()
    items[0] = 999
    table = table.set_column(table.schema.get_field_index("item"), "item", pa.array(items))
    shutil.rmtree(target / "examples")
    write_table(table, target / "examples" / "part-00000.parquet", EXAMPLES)
    with pytest.raises(ValueError, match=r"examples.item holds index 999, outside the vocab \[0, 301\)"):
        load_ingest(target)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no ingest output"):
        load_ingest(tmp_path / "nope")
