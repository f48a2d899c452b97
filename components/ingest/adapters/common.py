"""What the public data set adapters share: `Prepared`, file readers, the request protocol, reports."""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from seqrank.schema import RAW_EVENT, RAW_ITEMS

log = logging.getLogger(__name__)

MS = 1000
# Older than raw logs may be: MovieLens ratings start in 1995, Amazon reviews in the late 1990s.
PUBLIC_MIN_TS_MS = 788_918_400_000  # 1995-01-01T00:00:00Z
_SAMPLING_ROUNDS = 32


@dataclass
class Prepared:
    """A data set as raw events, ready for the ingest pipeline."""

    events: pa.Table  # RAW_EVENT columns, ts in epoch ms
    items: pa.Table  # RAW_ITEMS
    files: list[str]  # the data set files read, for the manifest
    dead: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    split_mode: str = "time"
    min_ts_ms: int = PUBLIC_MIN_TS_MS


class _Rows:
    """Rows of one source file being checked: string columns, line numbers, a reject code per row."""

    def __init__(self, table: pa.Table, lines: np.ndarray, source: str, record: Callable[[int], str]) -> None:
        self.table = table
        self.lines = lines
        self.source = source
        self.record = record
        self.reason = np.full(table.num_rows, None, dtype=object)
        self.field = np.full(table.num_rows, None, dtype=object)
        self.dead: list[dict[str, Any]] = []
        self.objects: list[dict] = []  # the parsed objects of a JSON source, row-aligned

    def reject(self, mask: np.ndarray, reason: str, column: str | None) -> None:
        """Give rows in `mask` that have no reason yet this one (the first failed check wins)."""
        hit = mask & (self.reason == None)  # noqa: E711 - elementwise comparison on an object array
        self.reason[hit] = reason
        self.field[hit] = column

    def column(self, name: str) -> pd.Series:
        return self.table.column(name).to_pandas()

    def require_ids(self, *names: str) -> None:
        for name in names:
            values = self.column(name)
            self.reject((values.isna() | (values.str.strip() == "")).to_numpy(), "empty_id", name)

    def integers(self, name: str, reason: str) -> np.ndarray:
        values = pd.to_numeric(self.column(name), errors="coerce")
        bad = (values.isna() | (values != np.floor(values))).to_numpy()
        self.reject(bad, reason, name)
        return values.fillna(0).to_numpy(np.float64).astype(np.int64)

    def accepted(self) -> np.ndarray:
        return self.reason == None  # noqa: E711

    def finish(self) -> None:
        for row in np.flatnonzero(~self.accepted()):
            self.dead.append(
                {
                    "reason": self.reason[row],
                    "field": self.field[row],
                    "source": self.source,
                    "line": int(self.lines[row]),
                    "record": self.record(int(row)),
                }
            )


def read_csv(path: str, names: list[str], header: bool) -> _Rows:
    """A CSV file as string columns; lines with the wrong number of fields are malformed."""
    invalid: list[tuple[int, str]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((int(row.number), row.text))
        return "skip"

    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(
            column_names=names, skip_rows=1 if header else 0, use_threads=False, encoding="utf8"
        ),
        # Blank lines stay rows (and fail as empty ids) so that every line is accounted for.
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=False
        ),
    )
    first = 2 if header else 1
    bad_lines = {number for number, _ in invalid}
    total = table.num_rows + len(invalid)
    lines = np.array([n for n in range(first, first + total) if n not in bad_lines], np.int64)

    def record(row: int) -> str:
        return ",".join(str(table.column(name)[row].as_py()) for name in names)

    rows = _Rows(table, lines, path, record)
    rows.dead = [
        {"reason": "malformed", "field": None, "source": path, "line": number, "record": text}
        for number, text in invalid
    ]
    return rows


def read_json_lines(path: str, fields: tuple[str, ...], loose: bool = False) -> _Rows:
    """A JSON-lines file; `loose` also reads Python-literal lines (the Amazon metadata's format)."""
    objects: list[dict] = []
    texts: list[str] = []
    lines: list[int] = []
    malformed: list[tuple[int, str]] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            text = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
            if not text.strip():
                continue
            obj = _parse_object(text, loose)
            if obj is None:
                malformed.append((number, text))
                continue
            objects.append(obj)
            texts.append(text)
            lines.append(number)
    table = pa.table(
        {name: pa.array([_as_text(obj.get(name)) for obj in objects], pa.string()) for name in fields}
    )
    rows = _Rows(table, np.array(lines, np.int64), path, lambda row: texts[row])
    rows.dead = [
        {"reason": "malformed", "field": None, "source": path, "line": number, "record": text}
        for number, text in malformed
    ]
    rows.objects = objects
    return rows


def _parse_object(text: str, loose: bool) -> dict | None:
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
        if loose:
            # The published metadata is written with Python's repr; literal_eval reads it safely.
            try:
                obj = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                obj = None
    return obj if isinstance(obj, dict) else None


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return json.dumps(value)


def input_files(inputs: list[str]) -> list[Path]:
    found: list[Path] = []
    for pattern in inputs:
        path = Path(pattern)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(Path().glob(pattern)) if any(c in pattern for c in "*?[") else []
            if not matches:
                raise FileNotFoundError(f"input {pattern!r} matches no file")
            found.extend(matches)
    return found


def pick(files: list[Path], what: str, test: Callable[[Path], bool]) -> Path:
    matches = [f for f in files if test(f)]
    if len(matches) != 1:
        raise ValueError(f"expected exactly one {what} among the inputs, found {[str(m) for m in matches]}")
    return matches[0]


# ---- the common protocol: requests of one positive and sampled negatives -----------------------


def requests(
    prefix: str,
    user: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    kind: np.ndarray,
    example: np.ndarray,
    interacted: tuple[np.ndarray, np.ndarray],
    catalogue: np.ndarray,
    negatives: int,
    seed: int,
    category: np.ndarray | None = None,
) -> tuple[pa.Table, dict[str, int]]:
    """Raw events for behaviors (user, item, ts, kind) and a request per row in `example`.

    `interacted` is every (user, item) pair the data set knows, positive or not: no negative is
    drawn from them. Rows must come in a deterministic order; the caller sorts them.
    """
    rng = np.random.default_rng(seed)
    n = len(user)
    items = np.unique(catalogue)
    users, user_code = np.unique(np.concatenate([user, interacted[0]]), return_inverse=True)
    n_items = len(items)
    seen_keys = np.unique(
        user_code[n:].astype(np.int64) * n_items + np.searchsorted(items, interacted[1]).astype(np.int64)
    )
    rows = np.flatnonzero(example)
    m = len(rows)
    request_id = np.full(n, None, dtype=object)
    request_id[rows] = [f"{prefix}-r{k}" for k in range(m)]

    # Negatives: draw, and redraw the ones the user interacted with; a user who has seen nearly
    # every item may end up with fewer.
    draw = rng.integers(0, max(n_items, 1), (m, negatives))
    owner = user_code[rows].astype(np.int64)[:, None]
    bad = np.isin(owner * n_items + draw, seen_keys)
    for _ in range(_SAMPLING_ROUNDS):
        if not bad.any():
            break
        draw[bad] = rng.integers(0, n_items, int(bad.sum()))
        bad = np.isin(owner * n_items + draw, seen_keys)
    slots = np.argsort(rng.random((m, negatives + 1)), axis=1).astype(np.int32)

    imp_item = np.concatenate(
        [item[rows][:, None], items[draw] if m else np.zeros((0, negatives), item.dtype)], 1
    )
    keep = np.concatenate([np.ones((m, 1), bool), ~bad], axis=1).ravel()
    request_of = np.repeat(np.arange(m), negatives + 1)[keep]
    slot_of = np.tile(np.arange(negatives + 1), m)[keep]
    impressions = pd.DataFrame(
        {
            "ts": ts[rows][request_of],
            "user_id": user[rows][request_of],
            "item_id": imp_item.ravel()[keep],
            "event_type": "impression",
            "event_id": [f"{prefix}-i{k}-{j}" for k, j in zip(request_of, slot_of, strict=True)],
            "request_id": request_id[rows][request_of],
            "position": slots.ravel()[keep],
            "category_id": None,
        }
    )
    behaviors = pd.DataFrame(
        {
            "ts": ts,
            "user_id": user,
            "item_id": item,
            "event_type": kind,
            "event_id": [f"{prefix}-b{k}" for k in range(n)],
            "request_id": request_id,
            "position": None,
            "category_id": category if category is not None else None,
        }
    )
    events = pa.Table.from_pandas(
        pd.concat([behaviors, impressions], ignore_index=True), preserve_index=False
    )
    events = pa.table({f.name: events.column(f.name).cast(f.type) for f in RAW_EVENT}, schema=RAW_EVENT)
    stats = {
        "behaviors": n,
        "requests": m,
        "negatives_sampled": int((~bad).sum()),
        "negatives_unavailable": int(bad.sum()),
        "users": len(users),
    }
    return events, stats


def items_table(item: np.ndarray, category: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "item_id": pa.array(item, pa.string()),
            "category_id": pa.array(category, pa.string()),
            "brand_id": pa.nulls(len(item), pa.string()),
            "price": pa.nulls(len(item), pa.float64()),
        },
        schema=RAW_ITEMS,
    )


def sort_order(user: np.ndarray, ts: np.ndarray, item: np.ndarray) -> np.ndarray:
    return np.lexsort((item, ts, user))


def unique_rows(keys: list[np.ndarray]) -> np.ndarray:
    """Mask of the first row of each distinct key (identical source rows count once)."""
    frame = pd.DataFrame({str(i): k for i, k in enumerate(keys)})
    return ~frame.duplicated(keep="first").to_numpy()


def adapter_report(
    protocol: str, sources: list[_Rows], duplicates: int, filtered: dict[str, int], used: int
) -> dict:
    rejected: dict[str, int] = {}
    read = 0
    for rows in sources:
        read += rows.table.num_rows + sum(1 for d in rows.dead if d["reason"] == "malformed")
        for d in rows.dead:
            rejected[d["reason"]] = rejected.get(d["reason"], 0) + 1
    return {
        "protocol": protocol,
        "rows_read": read,
        "rows_used": used,
        "rows_rejected": rejected,
        "rows_duplicate": duplicates,
        "rows_filtered": filtered,
    }
