"""Great Expectations suites for the ingest outputs, with thresholds from `ValidateConfig`."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import great_expectations as gx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seqrank.config import ValidateConfig
from seqrank.schema import EVENT_TYPES, EXAMPLES, RAW_REQUIRED, SPLITS

E = gx.expectations

# Pandas dtypes that hold each Arrow type of the contracts (nullable variants included).
_PANDAS_TYPES = {
    pa.int64(): ["int64", "Int64"],
    pa.int32(): ["int32", "Int32"],
    pa.int8(): ["int8", "Int8"],
    pa.string(): ["object", "str", "string"],
}
TS_MIN_MS = 946_684_800_000  # 2000-01-01, as ingest rejects earlier timestamps
DAY_MS = 86_400_000
RAW_SAMPLE_ROWS = 50_000


def _raw_rows(path: Path, fmt: str, limit: int) -> list[dict]:
    if fmt == "jsonl":
        rows = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in itertools.islice(f, limit):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # malformed lines are ingest's dead letters; here we profile the rest
                if isinstance(record, dict):
                    rows.append(record)
        return rows
    if fmt == "csv":
        return pd.read_csv(path, nrows=limit, dtype=str, on_bad_lines="skip").to_dict("records")
    if fmt == "parquet":
        parquet = pq.ParquetFile(path)
        return next(parquet.iter_batches(batch_size=limit)).to_pylist() if parquet.metadata.num_rows else []
    return []


def raw_events_frame(inputs: list[dict], limit: int = RAW_SAMPLE_ROWS) -> pd.DataFrame | None:
    """A sample of the raw events the ingest read (from its manifest's inputs), with `ts_ms`
    parsed from epoch ms or ISO-8601; None when no input is a raw log format."""
    rows: list[dict] = []
    for entry in inputs:
        if len(rows) < limit and Path(entry["path"]).exists():
            rows += _raw_rows(Path(entry["path"]), entry.get("fmt", ""), limit - len(rows))
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    ts = frame["ts"] if "ts" in frame else pd.Series([None] * len(frame))
    numeric = pd.to_numeric(ts, errors="coerce")
    parsed = pd.to_datetime(ts.where(numeric.isna()), errors="coerce", utc=True, format="ISO8601")
    iso_ms = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    frame["ts_ms"] = numeric.where(numeric.notna(), iso_ms)
    return frame


def raw_events_suite(cfg: ValidateConfig, columns: list[str]) -> gx.ExpectationSuite:
    suite = gx.ExpectationSuite(name="raw_events")
    mostly = 1.0 - cfg.raw_max_bad_rate
    for name in RAW_REQUIRED:
        suite.add_expectation(E.ExpectColumnToExist(column=name))
    for name in ("user_id", "item_id", "event_type", "ts_ms"):
        if name in columns:
            suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=name, mostly=mostly))
    if "event_type" in columns:
        suite.add_expectation(
            E.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES), mostly=mostly)
        )
    now_ms = int(time.time() * 1000)
    suite.add_expectation(
        E.ExpectColumnValuesToBeBetween(
            column="ts_ms", min_value=TS_MIN_MS, max_value=now_ms + DAY_MS, mostly=mostly
        )
    )
    if "event_id" in columns:
        suite.add_expectation(
            E.ExpectColumnProportionOfUniqueValuesToBeBetween(
                column="event_id", min_value=1.0 - cfg.raw_max_duplicate_rate
            )
        )
    return suite


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
    for field in EXAMPLES:
        if field.name not in ("event_id", "request_id"):
            suite.add_expectation(E.ExpectColumnToExist(column=field.name))
            suite.add_expectation(
                E.ExpectColumnValuesToBeInTypeList(column=field.name, type_list=_PANDAS_TYPES[field.type])
            )
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
