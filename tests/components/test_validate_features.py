"""Feature-table validation: clean tables pass; a history over the cap and stale tables fail, named."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from components import validate
from feature_repo import TIMESTAMP_FIELD, USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR, table_path
from seqrank.config import ValidateConfig
from tests.helpers.feature_store import CFG, make_ingest_dir

VALIDATE = ValidateConfig(max_feature_staleness_hours=48)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from components import features

    root = tmp_path_factory.mktemp("feature-tables")
    ingest_dir = make_ingest_dir(root / "ingest")
    features.run(ingest_dir, root / "feast", CFG)
    return ingest_dir, root / "feast"


@pytest.fixture
def feast_copy(built, tmp_path: Path) -> tuple[Path, Path]:
    ingest_dir, feast_dir = built
    return ingest_dir, Path(shutil.copytree(feast_dir, tmp_path / "feast"))


def test_clean_feature_tables_pass(built, tmp_path: Path) -> None:
    ingest_dir, feast_dir = built
    report = validate.run_features(feast_dir, ingest_dir, VALIDATE, CFG, docs_dir=tmp_path / "docs")
    assert report["success"]
    assert (tmp_path / "docs" / "index.html").exists()


def test_history_longer_than_the_cap_fails(feast_copy) -> None:
    ingest_dir, feast_dir = feast_copy
    with pytest.raises(
        validate.ValidationFailed,
        match=rf"\[{USER_BEHAVIOR}\] expect_column_values_to_be_between on column 'length'.*max_value=5",
    ):
        validate.run_features(
            feast_dir, ingest_dir, VALIDATE, CFG.model_copy(update={"max_sequence_length": 5})
        )


def test_stale_features_fail(feast_copy) -> None:
    ingest_dir, feast_dir = feast_copy
    # Tables as an older run left them: their newest behavior ten days behind the data.
    for view in (USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR):
        path = table_path(feast_dir / "data", view)
        table = pq.read_table(path)
        index = table.schema.get_field_index(TIMESTAMP_FIELD)
        older = pc.subtract(table.column(index), pa.scalar(timedelta(days=10), pa.duration("us")))
        pq.write_table(table.set_column(index, TIMESTAMP_FIELD, older), path)
    with pytest.raises(validate.ValidationFailed, match=r"\[freshness\] .* on column 'staleness_hours'"):
        validate.run_features(feast_dir, ingest_dir, VALIDATE, CFG)


def test_padding_id_inside_a_sequence_fails(feast_copy) -> None:
    ingest_dir, feast_dir = feast_copy
    path = table_path(feast_dir / "data", USER_BEHAVIOR)
    table = pq.read_table(path)
    items = table.column("seq_item").to_pylist()
    row = next(i for i, seq in enumerate(items) if seq)
    items[row][0] = 0
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("seq_item"), "seq_item", pa.array(items, pa.list_(pa.int64()))
        ),
        path,
    )
    with pytest.raises(validate.ValidationFailed, match="on column 'smallest_id'"):
        validate.run_features(feast_dir, ingest_dir, VALIDATE, CFG)
