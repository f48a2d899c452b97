"""GX suites for the feature tables the features step wrote: caps, ranges and freshness."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import great_expectations as gx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_repo import TIMESTAMP_FIELD, USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR, table_path
from seqrank.config import FeatureConfig, ValidateConfig

E = gx.expectations
HOUR_MS = 3_600_000

Frames = dict[str, tuple[pd.DataFrame, Callable[[], gx.ExpectationSuite]]]


def _timestamps_ms(table: pa.Table) -> np.ndarray:
    return pc.cast(table.column(TIMESTAMP_FIELD), pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()


def sequence_frame(table: pa.Table, columns: tuple[str, ...]) -> pd.DataFrame:
    """One row per entity: sequence length, whether the arrays agree, the smallest id held."""
    lengths = [pc.list_value_length(table.column(c)).to_numpy() for c in columns]
    first = table.column(columns[0]).combine_chunks()
    values = pc.list_flatten(first).to_numpy()
    starts = first.offsets.to_numpy()[:-1] - first.offsets[0].as_py()
    smallest = np.ones(len(first), dtype=np.int64)  # an empty sequence holds no bad id
    nonempty = lengths[0] > 0
    if nonempty.any():
        # Segments between consecutive non-empty starts are exactly the non-empty rows.
        smallest[nonempty] = np.minimum.reduceat(values, starts[nonempty])
    return pd.DataFrame(
        {
            "length": lengths[0],
            "lengths_agree": np.all([n == lengths[0] for n in lengths], axis=0),
            "smallest_id": smallest,
        }
    )


def _sequence_suite(name: str, cap: int) -> gx.ExpectationSuite:
    suite = gx.ExpectationSuite(name=name)
    suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=1))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="length", max_value=cap))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="lengths_agree", value_set=[True]))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="smallest_id", min_value=1))
    return suite


def _freshness_suite(max_hours: float) -> gx.ExpectationSuite:
    suite = gx.ExpectationSuite(name="freshness")
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="staleness_hours", max_value=max_hours))
    return suite


def frames(
    feast_data: Path, data_max_ms: int, validate_cfg: ValidateConfig, features_cfg: FeatureConfig
) -> Frames:
    """Frames and suites for the sequence tables and their freshness against the ingest data.

    Staleness is how far the newest behavior the feature tables hold lags the newest behavior of
    the ingest data (`data_max_ms`): tables built from an older run show up here.
    """
    behavior = pq.read_table(table_path(feast_data, USER_BEHAVIOR))
    category = pq.read_table(table_path(feast_data, USER_CATEGORY_BEHAVIOR))
    newest = max(_timestamps_ms(behavior).max(initial=0), _timestamps_ms(category).max(initial=0))
    freshness = pd.DataFrame({"staleness_hours": [(data_max_ms - newest) / HOUR_MS]})
    return {
        USER_BEHAVIOR: (
            sequence_frame(behavior, ("seq_item", "seq_category", "seq_ts")),
            lambda: _sequence_suite(USER_BEHAVIOR, features_cfg.max_sequence_length),
        ),
        USER_CATEGORY_BEHAVIOR: (
            sequence_frame(category, ("cat_seq_item", "cat_seq_ts")),
            lambda: _sequence_suite(USER_CATEGORY_BEHAVIOR, features_cfg.category_k),
        ),
        "freshness": (freshness, lambda: _freshness_suite(validate_cfg.max_feature_staleness_hours)),
    }


def summary(frames_: Frames) -> dict[str, Any]:
    return {name: len(frame) for name, (frame, _) in frames_.items()}
