"""The files ingest's workers write and read, on any Beam file system: the stage-to-stage exchange.

Event rows go from one Beam stage to the next as partitioned Arrow IPC files; Beam moves only
references to them (a few bytes per partition). The in-process runner would otherwise hold every row
of a stage's output in memory, as encoded bytes, several times over until the next stage had read
it; a cluster runner would send them through its shuffle. Each file holds one record batch per
partition, in partition order (empty ones too), so a reader asks for partition `k` of every file
that has rows in it.

A path is a local path or a URI of any Beam file system (gs://, s3://, hdfs://, or one a plugin
registers). Local files go through the OS directly and are memory-mapped back without a copy; any
other goes through `apache_beam.io.filesystems.FileSystems`, and a reader seeks to the footer and to
the one partition it needs instead of fetching the file. Either way a file is written under a hidden
sibling name and renamed when complete, so no reader ever sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

log = logging.getLogger(__name__)

# The exchange's files are Arrow, Parquet and JSON, never compressed streams: a name ending in .gz
# must not switch the channel to a decompressing one that cannot seek.
_RAW = CompressionTypes.UNCOMPRESSED
_COPY_BLOCK = 1 << 20


def is_local(path: str | Path) -> bool:
    """Whether `path` is a plain local path (no URI scheme)."""
    return FileSystems.get_scheme(str(path)) is None


def join(base: str | Path, *parts: str) -> str:
    return os.path.join(base, *parts) if is_local(base) else FileSystems.join(str(base), *parts)


def split(path: str) -> tuple[str, str]:
    """(folder, name) of `path`."""
    return os.path.split(path) if is_local(path) else FileSystems.split(path)


def check_location(location: str, what: str) -> None:
    """Raise ValueError naming `what` when no installed Beam file system serves `location`."""
    if not location or is_local(location):
        return
    try:
        FileSystems.get_filesystem(location)
    except (ValueError, BeamIOError) as err:
        raise ValueError(f"{what} = {location!r}: {err}") from err


def mkdirs(path: str) -> None:
    """Make folder `path` (a no-op on object stores, which have none)."""
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    elif not FileSystems.exists(path):
        FileSystems.mkdirs(path)


@contextlib.contextmanager
def create(path: str) -> Iterator[Any]:
    """A binary write channel; the file appears at `path` only when the block ends without error."""
    folder, name = split(path)
    tmp = join(folder, f".{name}.{uuid.uuid4().hex[:8]}")
    if is_local(path):
        try:
            # Arrow's own file: Arrow and Parquet writers then skip Python on every write.
            with pa.OSFile(tmp, "wb") as f:
                yield f
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise
        return
    try:
        with FileSystems.create(tmp, compression_type=_RAW) as f:
            yield f
    except BaseException:
        with contextlib.suppress(BeamIOError):
            FileSystems.delete([tmp])
        raise
    try:
        FileSystems.rename([tmp], [path])
    except BeamIOError:
        # Some stores (HDFS) refuse to rename onto an existing file. One there was written by an
        # earlier attempt at the same work, with the same content: keep it.
        if not FileSystems.exists(path):
            raise
        FileSystems.delete([tmp])


def open_read(path: str) -> Any:
    """A binary, seekable read channel."""
    return open(path, "rb") if is_local(path) else FileSystems.open(path, compression_type=_RAW)


def write_bytes(path: str, data: bytes) -> None:
    with create(path) as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        data: bytes = f.read()
    return data


def write_json(value: Any, path: str) -> None:
    write_bytes(path, json.dumps(value).encode())


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path))


def write_parquet(table: pa.Table, path: str, **options: Any) -> None:
    with create(path) as f:
        pq.write_table(table, f, **options)


def write_partitions(table: pa.Table, keys: np.ndarray, n: int, path: str | Path) -> list[int]:
    """Write `table`'s rows grouped by `keys` (values in 0..n-1) to `path`; return the keys with rows.

    Rows keep their order inside a partition. The file appears under its name only when complete,
    so a retried write never leaves a half file for a reader.
    """
    counts = np.bincount(keys, minlength=n) if len(keys) else np.zeros(n, np.int64)
    order = np.argsort(keys, kind="stable")
    ordered = table.take(pa.array(order)).combine_chunks()
    batch = ordered.to_batches()[0] if ordered.num_rows else None
    ends = np.cumsum(counts)
    with create(str(path)) as sink, ipc.new_file(sink, table.schema) as writer:
        for k in range(n):
            if batch is None:
                writer.write_batch(pa.RecordBatch.from_pylist([], schema=table.schema))
            else:
                writer.write_batch(batch.slice(int(ends[k] - counts[k]), int(counts[k])))
    return [int(k) for k in np.flatnonzero(counts)]


def read_partition(paths: Iterable[str], key: int, schema: pa.Schema) -> pa.Table:
    """Partition `key` of every file in `paths`, in the order given, as one table."""
    batches = []
    for path in paths:
        if is_local(path):
            with ipc.open_file(pa.memory_map(str(path))) as reader:
                batches.append(reader.get_batch(key))
            continue
        with FileSystems.open(path, compression_type=_RAW) as f:
            # Through the channel, Arrow reads the footer and this partition's bytes only.
            source = pa.PythonFile(f, mode="r") if f.seekable() else pa.py_buffer(f.read())
            with ipc.open_file(source) as reader:
                batches.append(reader.get_batch(key))
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches, schema)


# ---- whole folders: staging inputs, bringing outputs back, removing the scratch ------------------


def list_folder(path: str) -> list[str]:
    """The files directly in folder `path`, sorted; hidden ones (unfinished writes) left out."""
    if is_local(path):
        if not os.path.isdir(path):
            return []
        names = sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))
        return [os.path.join(path, n) for n in names if not n.startswith(".")]
    found = FileSystems.match([join(path, "*")])[0].metadata_list
    files = sorted(m.path for m in found if not m.path.endswith("/"))
    return [f for f in files if not split(f)[1].startswith(".")]


def copy_file(src: str, dst: str) -> None:
    with open_read(src) as r, create(dst) as w:
        shutil.copyfileobj(r, w, _COPY_BLOCK)


def copy_folder(src: str, dst: str) -> list[str]:
    """Copy the files directly in folder `src` into folder `dst`; return the copies' paths."""
    mkdirs(dst)
    copies = []
    for path in list_folder(src):
        copies.append(join(dst, split(path)[1]))
        copy_file(path, copies[-1])
    return copies


@contextlib.contextmanager
def local_copy(path: str | None, folder: bool = False) -> Iterator[str | None]:
    """`path` as a local path: itself when local, else a temporary copy of the file (or folder)."""
    if path is None or is_local(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="seqrank-ingest-") as tmp:
        local = os.path.join(tmp, split(path.rstrip("/"))[1])
        copy: Callable[[str, str], Any] = copy_folder if folder else copy_file
        copy(path, local)
        yield local


def remove_tree(path: str) -> None:
    """Remove folder `path` and everything under it; a failure is logged, never raised."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        found = [m.path for m in FileSystems.match([join(path, "**")])[0].metadata_list]
        if found:
            FileSystems.delete(found)
        # Stores with real folders (HDFS) keep the emptied ones.
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except BeamIOError as err:
        log.warning("ingest: could not remove the scratch files under %s: %s", path, err)
