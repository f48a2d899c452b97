"""The features step: build Feast feature tables from ingest outputs, apply the repo, fill the online store."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from components.features import tables
from feature_repo import (
    ITEM_PROFILE,
    TABLE_SCHEMAS,
    TIMESTAMP_FIELD,
    USER_BEHAVIOR,
    USER_CATEGORY_BEHAVIOR,
    USER_PROFILE,
    VIEWS,
    definitions,
    table_path,
    write_store_config,
)
from seqrank.config import FeatureConfig
from seqrank.storage import atomic_dir

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

DATA_DIR = "data"  # feature tables under the Feast directory; the FileSources point here
# Materialization windows are [start, end); end one tick past the newest row so it is inside.
_ONE_MS = timedelta(milliseconds=1)


def build_tables(ingest_dir: Path, data_dir: Path, cfg: FeatureConfig) -> dict[str, int]:
    """Write one Parquet table per feature view into `data_dir` (all or nothing); return row counts."""
    ingest_dir = Path(ingest_dir)
    transforms = {
        USER_BEHAVIOR: lambda b: tables.user_behavior(b, cfg.max_sequence_length),
        USER_CATEGORY_BEHAVIOR: lambda b: tables.user_category_behavior(b, cfg.category_k),
        ITEM_PROFILE: tables.item_profile,
        USER_PROFILE: tables.user_profile,
    }
    rows: dict[str, int] = {}
    with atomic_dir(data_dir) as tmp:
        for view in VIEWS:
            source, schema = tables.SOURCES[view]
            rows[view] = 0
            # Streamed batch by batch, so memory holds one chunk of users however large the input.
            with pq.ParquetWriter(table_path(tmp, view), TABLE_SCHEMAS[view]) as writer:
                for batch in tables.scan(ingest_dir / source, schema, cfg.materialize_chunk_users):
                    out = transforms[view](batch)
                    writer.write_batch(out)
                    rows[view] += out.num_rows
    return rows


def _write_online(
    store: FeatureStore, view: str, path: Path, chunk_rows: int
) -> tuple[datetime, datetime] | None:
    """Write table `path` to the online store through Feast, `chunk_rows` rows at a time."""
    # Feast's materialize() loads its whole time window into memory; writing bounded row chunks
    # through the store's own ingestion path keeps memory flat and does the same conversion.
    first: datetime | None = None
    last: datetime | None = None
    reader = pq.ParquetFile(path)
    for batch in reader.iter_batches(batch_size=chunk_rows):
        if batch.num_rows == 0:
            continue
        # One frame per chunk: Feast turns it into a single Arrow batch and converts only the first
        # batch of what it builds, so larger inputs must never reach it in one call.
        store.write_to_online_store(view, df=pa.Table.from_batches([batch]).to_pandas())
        log.debug("%s: wrote %d rows online", view, batch.num_rows)
        stamps = batch.column(TIMESTAMP_FIELD)
        lo, hi = pc.min_max(stamps).values()
        first = lo.as_py() if first is None else min(first, lo.as_py())
        last = hi.as_py() if last is None else max(last, hi.as_py())
    return None if first is None or last is None else (first, last)


def run(ingest_dir: Path, feast_dir: Path, cfg: FeatureConfig) -> dict[str, Any]:
    """Build feature tables into `feast_dir/data/`, apply the Feast repo, and fill the online store.

    Returns a summary: users with a sequence, rows per feature table, seconds per stage.
    """
    from feast import FeatureStore

    started = time.perf_counter()
    feast_dir = Path(feast_dir).resolve()
    data_dir = feast_dir / DATA_DIR
    rows = build_tables(Path(ingest_dir), data_dir, cfg)
    built = time.perf_counter()

    write_store_config(feast_dir, cfg.project)
    store = FeatureStore(repo_path=str(feast_dir))
    objects = definitions(data_dir, cfg)
    store.apply(objects)
    applied = time.perf_counter()

    for view in VIEWS:
        window = _write_online(store, view, table_path(data_dir, view), cfg.materialize_chunk_users)
        if window is not None:
            # Recorded like a materialize() run, so `feast feature-views list` and incremental
            # materialization know what the online store holds.
            fv = store.get_feature_view(view)
            store.registry.apply_materialization(fv, store.project, window[0], window[1] + _ONE_MS)
        log.info("materialized %s: %d rows", view, rows[view])
    done = time.perf_counter()

    summary = {
        "users": rows[USER_BEHAVIOR],
        "rows": rows,
        "feast_dir": str(feast_dir),
        "project": cfg.project,
        "seconds": {
            "tables": round(built - started, 3),
            "apply": round(applied - built, 3),
            "materialize": round(done - applied, 3),
            "total": round(done - started, 3),
        },
    }
    log.info("features: %d users with sequences, %.1f s", summary["users"], done - started)
    return summary
