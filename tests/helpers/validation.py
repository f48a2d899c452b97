"""A real ingest output of tiny generated logs, and table edits that plant anomalies in a copy of it.

The dataset-level checks relate the tables of one ingest output (clicks to impressions, examples
to the vocab, timestamps to the ingest window), so their clean-data tests need tables that ingest
itself wrote from logs whose clicks follow impressions: the project's generator and ingest, at
the size of the pipeline tests (`tests.helpers.pipeline.TINY`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from seqrank.config import load_config
from tests.helpers.pipeline import TINY, generated_logs


def ingested_world(root: Path) -> Path:
    """Generate the TINY world's logs under `root/raw`, ingest them into `root/ingest`; return that."""
    from components.ingest import run as ingest

    cfg = load_config(overrides=TINY)
    inputs, users, items = generated_logs(cfg, root / "raw")
    ingest(inputs, root / "ingest", cfg.ingest, users=users, items=items)
    return root / "ingest"


def rewrite(directory: Path, edit: Callable[[pa.Table], pa.Table]) -> None:
    """Replace a step output folder's Parquet files by one file holding `edit` of their rows."""
    table = pq.read_table(directory)
    for part in directory.glob("*.parquet"):
        part.unlink()
    pq.write_table(edit(table), directory / "part-00000.parquet")


def replace_column(table: pa.Table, name: str, values: pa.Array | list) -> pa.Table:
    """`table` with column `name` holding `values`, in the column's own type."""
    index = table.schema.get_field_index(name)
    return table.set_column(
        index, table.schema.field(index), pa.array(values, table.schema.field(index).type)
    )
