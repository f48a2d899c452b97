"""Small Arrow helpers shared by the ingest transforms: concatenation and validity masks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables).combine_chunks()


def valid(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return arr.is_valid().to_numpy(zero_copy_only=False).astype(bool, copy=False)
