"""Raw log inputs: expand globs, fingerprint files, cut them into read tasks and parse each task.

Inputs are local paths or URIs of any Beam file system (gs://, s3://, hdfs://, ...); local ones are
read with the OS's own calls as ever, the others through Beam's `FileSystems` (matching, and reading
byte ranges and Parquet row groups by seeking), so the same read task works on any worker.

Parsing turns one task (a newline-aligned byte range of a JSONL/CSV file, or one Parquet row group)
into `RawBatch`es: row-aligned raw column values, flagging the records that could not even be
parsed. Typing and checking the values is `records.normalize`'s job.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import io
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from components.ingest.exchange import is_local, open_read, split
from components.ingest.reasons import CODE
from seqrank.errors import InputError, InputNotFoundError
from seqrank.schema import RAW_EVENT
from simulator.generator import (
    EVENTS_JSONL,
    EVENTS_PARQUET,
    ITEMS_FILE,
    ORACLE_FILE,
    SUMMARY_FILE,
    USERS_FILE,
)

FORMATS = ("jsonl", "csv", "parquet")
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
RAW_FIELDS = tuple(RAW_EVENT.names)
# The columns that make a file an event log rather than a side table, an oracle or a summary.
EVENT_COLUMNS = tuple(f.name for f in RAW_EVENT if not f.nullable)
# Big enough that per-task overhead vanishes, small enough that a worker holds a few at once.
CHUNK_BYTES = 8 << 20
_BOM = b"\xef\xbb\xbf"
# A JSONL chunk Arrow cannot read whole is split this many ways, recursively, down to spans this
# short, which json.loads reads line by line.
_SPLIT_INTO = 16
_CAREFUL_LINES = 32
# A line holding nothing but whitespace is not a record; finding one needs a regex pass, and the
# common case (none) then skips a Python-level scan of every line. The first line is checked on
# its own: a pattern that starts with a newline lets the regex engine jump from newline to newline.
_BLANK_FIRST = re.compile(rb"[ \t\r\f\v]*(?:\n|\Z)")
_BLANK_AFTER_FIRST = re.compile(rb"\n[ \t\r\f\v]*(?:\n|\Z)")


def _json_schema(ts_type: pa.DataType) -> pa.Schema:
    # Every field nullable (absence is judged later, with a reason), position wide enough to see
    # out-of-range values instead of failing the whole chunk.
    types = {"ts": ts_type, "position": pa.int64()}
    return pa.schema([pa.field(f.name, types.get(f.name, f.type)) for f in RAW_EVENT])


# A JSON log usually writes ts one way throughout; try epoch ms first, then strings.
_JSON_SCHEMAS = {ts_type: _json_schema(ts_type) for ts_type in (pa.int64(), pa.string())}


@dataclass(frozen=True)
class InputFile:
    """One input file as the manifest lists it."""

    path: str
    fmt: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ReadTask:
    """A unit of parallel reading: a byte range of a text file or one Parquet row group."""

    index: int
    path: str
    fmt: str
    start: int
    end: int
    first_line: int
    header: tuple[str, ...] | None = None


@dataclass
class RawBatch:
    """Row-aligned raw values of one task; rows in `pre` != 0 failed before any value was read."""

    n: int
    columns: dict[str, Any]
    pre: np.ndarray
    lines: np.ndarray
    record: Callable[[int], str]


def detect_format(path: str, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r} is not one of auto, {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ValueError(
            f"cannot tell the format of {path} from its extension {suffix!r}; "
            f"use one of {', '.join(sorted(EXTENSIONS))} or pass fmt=jsonl|csv|parquet"
        )
    return EXTENSIONS[suffix]


@dataclass(frozen=True)
class ResolvedInputs:
    """What the inputs name: the event files to read, and side tables found beside them."""

    events: list[str]
    users: str | None = None
    items: str | None = None


def resolve_inputs(inputs: list[str], fmt: str = "auto") -> ResolvedInputs:
    """Inputs as given (files, globs, folders) -> the event files, and side tables where known.

    A folder is read by its layout. A `seqrank generate` output (summary.json, oracle.parquet,
    events, users.parquet, items.parquet) gives its events once (events.jsonl, or events.parquet
    for fmt=parquet) and its side tables; its oracle and summary are answers, not events. Any other
    folder must hold event logs only, so that a side table is never read as events: one holding
    files that are not event logs (no ts, user_id, item_id, event_type) is refused with
    `InputError`, as is one holding no event log at all. Files and globs are taken as they are.
    """
    if not inputs:
        raise InputError(
            "no inputs given: pass event log files, a folder of them, or a `seqrank generate` output"
        )
    events: list[str] = []
    users: list[str] = []
    items: list[str] = []
    for pattern in map(str, inputs):
        listing = _folder_files(pattern)
        if listing is None:
            matches = expand_inputs([pattern])
        elif (generated := _generated_layout(listing, fmt)) is not None:
            matches = [generated.events[0]]
            users.append(generated.users or "")
            items.append(generated.items or "")
        else:
            matches = _log_folder(pattern, listing)
        events.extend(m for m in matches if m not in events)
    if len(users) > 1:
        raise InputError(
            f"{len(users)} `seqrank generate` outputs given, each with its own side tables: "
            "ingest them one at a time, or pass their events files with the side tables to use"
        )
    return ResolvedInputs(events, users[0] if users else None, items[0] if items else None)


def _folder_files(pattern: str) -> dict[str, str] | None:
    """A folder's files by name (None when `pattern` is no folder): only files of a log format."""
    if not is_local(pattern):
        if glob.has_magic(pattern):
            return None
        try:
            inside = [m.path for m in _match(pattern.rstrip("/") + "/*") if not m.path.endswith("/")]
        except BeamIOError:
            return None  # a file, where listing it as a folder is an error
        return {split(p)[1]: p for p in sorted(inside)} or None
    path = Path(pattern)
    if not path.is_dir():
        return None
    return {p.name: str(p) for p in sorted(path.iterdir()) if p.is_file()}


def _generated_layout(listing: dict[str, str], fmt: str) -> ResolvedInputs | None:
    """The events and side tables of a `seqrank generate` output; None for any other folder."""
    if not {SUMMARY_FILE, ORACLE_FILE, USERS_FILE, ITEMS_FILE} <= listing.keys():
        return None
    events = EVENTS_PARQUET if fmt == "parquet" else EVENTS_JSONL
    if events not in listing:
        return None
    return ResolvedInputs([listing[events]], listing[USERS_FILE], listing[ITEMS_FILE])


def _log_folder(folder: str, listing: dict[str, str]) -> list[str]:
    """A plain folder's event logs; `InputError` when it also holds other tables, or no logs."""
    logs = {name: path for name, path in listing.items() if Path(name).suffix.lower() in EXTENSIONS}
    others = sorted(name for name, path in logs.items() if not _has_event_columns(path))
    if others:
        raise InputError(
            f"folder {folder} mixes event logs with other files ({', '.join(others)}): pass only event "
            "logs (a folder of them, the files, or a glob) and side tables with --users/--items"
        )
    if not logs:
        raise InputError(
            f"folder {folder} holds no event log (.jsonl, .csv or .parquet): pass a folder of logs, "
            "the log files themselves, or a `seqrank generate` output"
        )
    return list(logs.values())


def _has_event_columns(path: str) -> bool:
    """Whether a file's first record (JSONL), header (CSV) or schema (Parquet) has the event columns."""
    kind = EXTENSIONS[Path(split(path)[1]).suffix.lower()]
    names: set[str] = set()
    if kind == "parquet":
        try:
            with _parquet_file(path) as parquet:
                names = set(parquet.schema_arrow.names)
        except (pa.ArrowInvalid, OSError):
            return False
    elif kind == "csv":
        names = set(_csv_header(path)[0])
    else:
        with open_read(path) as f:
            for line in f:
                if line.strip():
                    try:
                        first = json.loads(line.removeprefix(_BOM))
                    except ValueError:
                        return False  # e.g. an indented JSON document, whose first line is "{"
                    names = set(first) if isinstance(first, dict) else set()
                    break
            else:
                return True  # an empty log is still a log; ingest counts its zero records
    return set(EVENT_COLUMNS) <= names


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, directories and globs -> existing files, in the order given (globs sorted)."""
    if not inputs:
        raise InputError(
            "no inputs given: pass event log files, a folder of them, or a `seqrank generate` output"
        )
    found: list[str] = []
    for pattern in inputs:
        pattern = str(pattern)
        path = Path(pattern)
        if not is_local(pattern):
            matches = _expand_uri(pattern)
        elif path.is_dir():
            matches = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
        elif glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        else:
            matches = [pattern] if path.is_file() else []
        if not matches:
            raise InputNotFoundError(f"input {pattern!r} matches no file")
        found.extend(m for m in matches if m not in found)
    return found


def _expand_uri(pattern: str) -> list[str]:
    """A URI's files: a glob, a folder's files, or the one file it names.

    Globs are Beam's (`*` within a folder, `**` across folders); on an object store a folder is the
    prefix before a /.
    """
    if glob.has_magic(pattern):
        return sorted(m.path for m in _match(pattern) if not m.path.endswith("/"))
    # A folder first: on stores with real folders (HDFS) a folder also "exists" as a path.
    try:
        inside = [m.path for m in _match(pattern.rstrip("/") + "/*") if not m.path.endswith("/")]
    except BeamIOError:
        inside = []  # a file, where listing it as a folder is an error
    if inside:
        return sorted(p for p in inside if Path(split(p)[1]).suffix.lower() in EXTENSIONS)
    return [pattern] if not pattern.endswith("/") and FileSystems.exists(pattern) else []


def _match(pattern: str) -> list[Any]:
    metadata: list[Any] = FileSystems.match([pattern])[0].metadata_list
    return metadata


def _scan_text(path: str, chunk_bytes: int) -> tuple[str, int, list[tuple[int, int]]]:
    """One pass over a text file: sha256, size and newline-aligned cut points (offset, lines before)."""
    digest = hashlib.sha256()
    cuts = [(0, 0)]
    pos = lines = 0
    target = chunk_bytes
    with open_read(path) as f:
        while block := f.read(1 << 20):
            digest.update(block)
            search_from = 0
            while pos + len(block) > target:
                nl = block.find(b"\n", max(target - pos, search_from))
                if nl < 0:
                    break
                cut = pos + nl + 1
                cuts.append((cut, lines + block.count(b"\n", 0, nl + 1)))
                search_from = nl + 1
                target = cut + chunk_bytes
            lines += block.count(b"\n")
            pos += len(block)
    return digest.hexdigest(), pos, cuts


def _fingerprint(path: str) -> tuple[str, int]:
    """sha256 and size of a file's content (`seqrank.storage.file_fingerprint` for any file system)."""
    digest = hashlib.sha256()
    size = 0
    with open_read(path) as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


@contextlib.contextmanager
def _parquet_file(path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet reader: Arrow's own file when local, else over a seekable Beam channel."""
    if is_local(path):
        yield pq.ParquetFile(path)
        return
    with open_read(path) as f:
        yield pq.ParquetFile(f)


def _csv_header(path: str) -> tuple[tuple[str, ...], int]:
    """Column names of a CSV file and the byte offset where its records start."""
    with open_read(path) as f:
        first = f.readline()
    text = first.removeprefix(_BOM).decode("utf-8", errors="replace").rstrip("\r\n")
    names = next(csv.reader([text]), [])
    return tuple(name.strip() for name in names), len(first)


def plan(
    inputs: list[str], fmt: str = "auto", chunk_bytes: int | None = None
) -> tuple[list[InputFile], list[ReadTask]]:
    """Expand inputs, fingerprint every file and cut the files into read tasks."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    files: list[InputFile] = []
    tasks: list[ReadTask] = []
    for path in expand_inputs(inputs):
        kind = detect_format(path, fmt)
        if kind == "parquet":
            digest, size = _fingerprint(path)
            with _parquet_file(path) as parquet:
                meta = parquet.metadata
            first = 1
            for group in range(meta.num_row_groups):
                rows = meta.row_group(group).num_rows
                if rows:
                    tasks.append(ReadTask(len(tasks), path, kind, group, group + 1, first))
                first += rows
        else:
            digest, size, cuts = _scan_text(path, chunk_bytes)
            header = None
            if kind == "csv":
                header, body = _csv_header(path)
                # The header line is not a record: the first chunk starts after it.
                cuts = [(max(off, body), lines if off >= body else 1) for off, lines in cuts]
            bounds = [*cuts, (size, -1)]
            for (start, lines_before), (end, _) in itertools.pairwise(bounds):
                if end > start:
                    tasks.append(ReadTask(len(tasks), path, kind, start, end, lines_before + 1, header))
        files.append(InputFile(path, kind, size, digest))
    return files, tasks


def read_task(task: ReadTask) -> list[RawBatch]:
    """The task's records as one or more batches, in input order."""
    if task.fmt == "parquet":
        return [_read_parquet(task)]
    with open_read(task.path) as f:
        f.seek(task.start)
        data = f.read(task.end - task.start)
    if task.start == 0:
        data = data.removeprefix(_BOM)
    if task.fmt == "jsonl":
        return _read_jsonl(task, data)
    return [_read_csv(task, data)]


# ---- text formats -------------------------------------------------------------------------------


class _Lines:
    """A chunk's lines (the piece after a final newline dropped), split only when first needed.

    Arrow reads a clean chunk whole; single lines are needed only for broken chunks and for the
    record of a dead letter, and splitting costs as much as the Arrow parse itself.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._lines: list[bytes] | None = None

    def __getitem__(self, i: int) -> bytes:
        return self.all()[i]

    def all(self) -> list[bytes]:
        if self._lines is None:
            lines = self._data.split(b"\n")
            if lines and not lines[-1]:
                lines.pop()
            self._lines = lines
        return self._lines


def _nonblank(data: bytes, lines: _Lines) -> list[int]:
    """Indices of the chunk's lines that are not blank."""
    if data.endswith(b"\n"):
        body = memoryview(data)[:-1]
        if _BLANK_FIRST.match(body) is None and _BLANK_AFTER_FIRST.search(body) is None:
            return list(range(data.count(b"\n")))
    return [i for i, line in enumerate(lines.all()) if line and not line.isspace()]


def _clean_text(data: bytes) -> bool:
    """Whether a chunk is valid UTF-8 without NUL bytes; Arrow's readers do not check both."""
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text_record(lines: _Lines, keep: list[int]) -> Callable[[int], str]:
    def record(row: int) -> str:
        return lines[keep[row]].rstrip(b"\r").decode("utf-8", errors="backslashreplace")

    return record


def _decode_lines(lines: _Lines, keep: list[int], pre: np.ndarray) -> list[str | None]:
    """Decode each kept line, flagging invalid UTF-8 and raw NUL bytes in `pre`."""
    texts: list[str | None] = []
    for row, i in enumerate(keep):
        line = lines[i]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            pre[row] = CODE["invalid_utf8"]
            texts.append(None)
            continue
        if "\x00" in text:
            pre[row] = CODE["nul_byte"]
            texts.append(None)
            continue
        texts.append(text)
    return texts


def _read_jsonl(task: ReadTask, data: bytes) -> list[RawBatch]:
    lines = _Lines(data)
    keep = _nonblank(data, lines)
    parsed: dict[pa.Schema, list[tuple[list[int], pa.Table]]] = {}
    careful: list[int] = []

    def visit(rows: list[int], chunk: bytes) -> None:
        table = _jsonl_fast(chunk) if _clean_text(chunk) else None
        # pyarrow also accepts several objects on one line; then rows and lines disagree and only
        # the line-by-line path can say which line was bad.
        if table is not None and table.num_rows == len(rows):
            parsed.setdefault(table.schema, []).append((rows, table))
        elif len(rows) <= _CAREFUL_LINES:
            careful.extend(rows)
        else:
            # Narrow down where the bad lines are: Arrow re-reads the parts (~5x faster than
            # json.loads), so a few bad lines do not send a whole chunk down the slow path.
            step = -(-len(rows) // _SPLIT_INTO)
            for at in range(0, len(rows), step):
                part = rows[at : at + step]
                visit(part, b"\n".join(lines[i] for i in part))

    if keep:
        visit(keep, data)
    # One batch per schema (ts read as int or as string) plus one careful batch: checking has a
    # fixed cost per batch, and the parts of a chunk with a few bad lines can number thousands.
    batches = []
    for parts in parsed.values():
        rows = [row for part_rows, _ in parts for row in part_rows]
        table = pa.concat_tables([t for _, t in parts])
        columns = {name: table.column(name) for name in RAW_FIELDS}
        line_no = task.first_line + np.asarray(rows, dtype=np.int64)
        batches.append(
            RawBatch(len(rows), columns, np.zeros(len(rows), np.int8), line_no, _text_record(lines, rows))
        )
    if careful:
        batches.append(_jsonl_careful(task, lines, careful))
    return batches


def _jsonl_careful(task: ReadTask, lines: _Lines, rows: list[int]) -> RawBatch:
    """Line by line with json.loads: every broken line gets its own reason."""
    n = len(rows)
    pre = np.zeros(n, np.int8)
    objects: list[dict | None] = []
    for row, text in enumerate(_decode_lines(lines, rows, pre)):
        obj = None
        if text is not None:
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                pre[row] = CODE["malformed"]
                obj = None
        objects.append(obj)
    columns = {name: [obj.get(name) if obj is not None else None for obj in objects] for name in RAW_FIELDS}
    line_no = task.first_line + np.asarray(rows, dtype=np.int64)
    return RawBatch(n, columns, pre, line_no, _text_record(lines, rows))


def _jsonl_fast(data: bytes) -> pa.Table | None:
    """Parse a whole chunk with Arrow; None when any line needs the careful path."""
    read_options = pajson.ReadOptions(use_threads=False, block_size=max(len(data), 1 << 20))
    for ts_type, schema in _JSON_SCHEMAS.items():
        parse_options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        try:
            return pajson.read_json(io.BytesIO(data), read_options=read_options, parse_options=parse_options)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            if ts_type == pa.int64() and "/ts" in str(err):
                continue
            return None
    return None


def _read_csv(task: ReadTask, data: bytes) -> RawBatch:
    header = task.header or ()
    lines = _Lines(data)
    keep = _nonblank(data, lines)
    n = len(keep)
    line_no = task.first_line + np.asarray(keep, dtype=np.int64)
    record = _text_record(lines, keep)
    table = _csv_fast(data, header) if b'"' not in data and _clean_text(data) else None
    if table is not None and table.num_rows == n:
        columns = {name: _csv_column(table, header, name, n) for name in RAW_FIELDS}
        return RawBatch(n, columns, np.zeros(n, np.int8), line_no, record)
    pre = np.zeros(n, np.int8)
    return RawBatch(n, _csv_careful(lines, keep, header, pre), pre, line_no, record)


def _csv_careful(lines: _Lines, keep: list[int], header: tuple[str, ...], pre: np.ndarray) -> dict[str, Any]:
    """Line by line with the csv module; broken lines are flagged in `pre`."""
    n = len(keep)
    texts = _decode_lines(lines, keep, pre)
    rows: list[list[str] | None] = [None] * n
    good = [row for row, text in enumerate(texts) if text is not None]
    at = 0  # position in `good` of the next line the reader will get

    def feed() -> Iterator[str]:
        nonlocal at
        while at < len(good):
            at += 1
            yield texts[good[at - 1]].rstrip("\r")  # type: ignore[union-attr]

    reader = csv.reader(feed(), strict=True)
    while at < len(good):
        start = at
        try:
            values: list[str] | None = next(reader)
        except csv.Error:
            values = None
        if values is None or at - start != 1:
            # An open quote makes the reader swallow the lines after it; only the line that opened
            # it is broken, so read again from the next line with a fresh reader.
            pre[good[start]] = CODE["malformed"]
            at = start + 1
            reader = csv.reader(feed(), strict=True)
            continue
        if len(values) != len(header):
            pre[good[start]] = CODE["malformed"]
            continue
        rows[good[start]] = values
    for row in range(n):
        if pre[row] == 0 and rows[row] is None:
            pre[row] = CODE["malformed"]
    position = {name: header.index(name) for name in RAW_FIELDS if name in header}
    columns: dict[str, Any] = {}
    for name in RAW_FIELDS:
        col = position.get(name)
        columns[name] = (
            [(r[col] or None) if r is not None else None for r in rows] if col is not None else [None] * n
        )
    return columns


def _csv_fast(data: bytes, header: tuple[str, ...]) -> pa.Table | None:
    """Parse an unquoted chunk with Arrow; None when any row needs the careful path."""
    if not header or len(set(header)) != len(header):
        return None
    invalid: list[int] = []

    def on_invalid(_row: Any) -> str:
        invalid.append(1)
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=list(header), use_threads=False),
            parse_options=pacsv.ParseOptions(
                quote_char=False, newlines_in_values=False, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    return None if invalid else table


def _csv_column(table: pa.Table, header: tuple[str, ...], name: str, n: int) -> Any:
    if name not in header:
        return pa.nulls(n, pa.string())
    return table.column(name)


# ---- Parquet ------------------------------------------------------------------------------------


def _read_parquet(task: ReadTask) -> RawBatch:
    with _parquet_file(task.path) as parquet:
        table = parquet.read_row_group(task.start)
    n = table.num_rows
    pre = np.zeros(n, np.int8)
    columns: dict[str, Any] = {}
    for name in RAW_FIELDS:
        if name not in table.column_names:
            columns[name] = pa.nulls(n, pa.string())
            continue
        col = table.column(name).combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = _valid_utf8(col, pre)
        columns[name] = col
    return RawBatch(n, columns, pre, task.first_line + np.arange(n, dtype=np.int64), _parquet_record(table))


def _valid_utf8(col: pa.Array, pre: np.ndarray) -> pa.Array:
    """Parquet does not promise valid UTF-8 in string columns; flag and null the rows that are not."""
    try:
        col.validate(full=True)
        return col
    except pa.ArrowInvalid:
        pass
    values = col.cast(pa.large_binary()).to_pylist()
    clean: list[str | None] = []
    for row, value in enumerate(values):
        try:
            clean.append(value.decode("utf-8") if value is not None else None)
        except UnicodeDecodeError:
            pre[row] = CODE["invalid_utf8"]
            clean.append(None)
    return pa.array(clean, pa.string())


def _parquet_record(table: pa.Table) -> Callable[[int], str]:
    def record(row: int) -> str:
        values = {}
        for name in table.column_names:
            col = table.column(name)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                raw = col.cast(pa.large_binary())[row].as_py()
                values[name] = raw.decode("utf-8", errors="backslashreplace") if raw is not None else None
            else:
                values[name] = col[row].as_py()
        return json.dumps(values, default=str, ensure_ascii=False)

    return record
