"""Great Expectations suites for the ingest outputs, with thresholds from `ValidateConfig`."""

from __future__ import annotations

import great_expectations as gx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from seqrank.config import ValidateConfig
from seqrank.schema import EXAMPLES, SPLITS

E = gx.expectations


def examples_frame(examples: pa.Table, behaviors: pa.Table) -> pd.DataFrame:
    """Examples plus `hist_len_ok`: whether hist_end fits in the user's behavior count."""
    counts = dict(
        zip(
            behaviors.column("user").to_pylist(),
            pc.list_value_length(behaviors.column("item")).to_pylist(),
            strict=True,
        )
    )
    frame = examples.drop_columns([c for c in ("event_id", "request_id") if c in examples.column_names])
    frame = frame.to_pandas()
    n_behaviors = frame["user"].map(counts).fillna(0).to_numpy()
    frame["hist_len_ok"] = frame["hist_end"].to_numpy() <= n_behaviors
    return frame


def behaviors_frame(behaviors: pa.Table) -> pd.DataFrame:
    """One row per user with scalar facts about the list columns (GX expectations are columnar)."""
    lengths = {c: pc.list_value_length(behaviors.column(c)).to_numpy() for c in ("item", "category", "ts")}
    ts = behaviors.column("ts").combine_chunks()
    flat = pc.list_flatten(ts).to_numpy()
    offsets = ts.offsets.to_numpy() - ts.offsets[0].as_py()  # a sliced array's offsets start later
    # A user's ts are sorted when no step inside the user's range goes backwards; steps that cross
    # from one user to the next are not steps of either. backwards[i] compares flat[i], flat[i + 1].
    backwards = np.append(np.diff(flat) < 0, False)
    boundaries = offsets[1:-1] - 1
    backwards[boundaries[(boundaries >= 0) & (boundaries < len(backwards))]] = False
    cum = np.concatenate([[0], np.cumsum(backwards)])
    starts, ends = offsets[:-1], offsets[1:]
    sorted_ok = (cum[np.maximum(ends - 1, starts)] - cum[starts]) == 0
    return pd.DataFrame(
        {
            "user": behaviors.column("user").to_numpy(),
            "length": lengths["item"],
            "lengths_agree": (lengths["item"] == lengths["category"]) & (lengths["item"] == lengths["ts"]),
            "ts_sorted": sorted_ok,
        }
    )


def examples_suite(cfg: ValidateConfig) -> gx.ExpectationSuite:
    suite = gx.ExpectationSuite(name="examples")
    for name in EXAMPLES.names:
        if name not in ("event_id", "request_id"):
            suite.add_expectation(E.ExpectColumnToExist(column=name))
    suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=cfg.min_examples))
    for col in ("user", "item", "label", "ts", "hist_end", "split"):
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=col, mostly=1.0 - cfg.max_null_rate))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]))
    suite.add_expectation(
        E.ExpectColumnMeanToBeBetween(
            column="label", min_value=cfg.min_label_rate, max_value=cfg.max_label_rate
        )
    )
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="hist_end", min_value=0))
    suite.add_expectation(E.ExpectColumnValuesToBeBetween(column="user", min_value=1))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)))
    suite.add_expectation(E.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(SPLITS)))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="hist_len_ok", value_set=[True]))
    return suite


def behaviors_suite(cfg: ValidateConfig) -> gx.ExpectationSuite:
    suite = gx.ExpectationSuite(name="behaviors")
    suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=1))
    suite.add_expectation(E.ExpectColumnValuesToBeUnique(column="user"))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="lengths_agree", value_set=[True]))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="ts_sorted", value_set=[True]))
    return suite
