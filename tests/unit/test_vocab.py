"""The core vocab lookup: raw id -> dense index, and the errors that name what is missing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqrank.schema import VOCAB
from seqrank.vocab import MissingVocabError, UnknownIdError, VocabError, dense_index


@pytest.fixture
def vocab_dir(tmp_path: Path) -> Path:
    table = pa.table({"raw": ["u7", "u3", "u9"], "index": [1, 2, 3]}).cast(VOCAB)
    pq.write_table(table, tmp_path / "user.parquet")
    return tmp_path


def test_known_ids_map_to_their_index(vocab_dir: Path) -> None:
    assert [dense_index(vocab_dir, "user", raw) for raw in ("u7", "u3", "u9")] == [1, 2, 3]


def test_an_unknown_id_is_named(vocab_dir: Path) -> None:
    with pytest.raises(UnknownIdError, match=r"user 'u4' is not in the vocab at .*user\.parquet") as err:
        dense_index(vocab_dir, "user", "u4")
    assert err.value.entity == "user" and err.value.path == vocab_dir / "user.parquet"


def test_a_missing_vocab_is_named(vocab_dir: Path) -> None:
    with pytest.raises(MissingVocabError, match=r"no item vocab at .*item\.parquet") as err:
        dense_index(vocab_dir, "item", "i1")
    assert isinstance(err.value, VocabError) and err.value.path == vocab_dir / "item.parquet"
