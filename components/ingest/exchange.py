"""Partitioned Arrow IPC files that carry event rows from one Beam stage to the next.

Beam moves only references to these files (a few bytes per partition); the rows themselves go
through the file system once, as Arrow record batches, and are memory-mapped back without a copy.
The in-process runner would otherwise hold every row of a stage's output in memory, as encoded
bytes, several times over until the next stage had read it; a cluster runner would send them
through its shuffle. Each file holds one record batch per partition, in partition order (empty
ones too), so a reader asks for partition `k` of every file that has rows in it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc


def write_partitions(table: pa.Table, keys: np.ndarray, n: int, path: Path) -> list[int]:
    """Write `table`'s rows grouped by `keys` (values in 0..n-1) to `path`; return the keys with rows.

    Rows keep their order inside a partition. The file appears under its name only when complete,
    so a retried write never leaves a half file for a reader.
    """
    counts = np.bincount(keys, minlength=n) if len(keys) else np.zeros(n, np.int64)
    order = np.argsort(keys, kind="stable")
    ordered = table.take(pa.array(order)).combine_chunks()
    batch = ordered.to_batches()[0] if ordered.num_rows else None
    ends = np.cumsum(counts)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    with ipc.new_file(tmp, table.schema) as writer:
        for k in range(n):
            if batch is None:
                writer.write_batch(pa.RecordBatch.from_pylist([], schema=table.schema))
            else:
                writer.write_batch(batch.slice(int(ends[k] - counts[k]), int(counts[k])))
    os.replace(tmp, path)
    return [int(k) for k in np.flatnonzero(counts)]


def read_partition(paths: Iterable[str], key: int, schema: pa.Schema) -> pa.Table:
    """Partition `key` of every file in `paths`, in the order given, as one table."""
    batches = []
    for path in paths:
        with ipc.open_file(pa.memory_map(str(path))) as reader:
            batches.append(reader.get_batch(key))
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches, schema)
