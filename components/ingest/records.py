"""Type and check raw event values: accepted rows become clean events, the rest get a reason.

Everything here is columnar (Arrow/numpy) on the common path; a column falls back to per-value
Python only when a JSON log mixes value types in it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components.ingest.reasons import CODE, REASONS
from components.ingest.sources import RawBatch, ReadTask
from seqrank.schema import BEHAVIOR_TYPE_CODE, EVENT_TYPES

MAX_ID_BYTES = 256
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
FUTURE_SLACK_MS = 86_400_000
ID_FIELDS = ("user_id", "item_id", "event_id", "request_id", "category_id")
REQUIRED_IDS = ("user_id", "item_id")
# Impressions are type 0; positives keep their BEHAVIOR_TYPE_CODE so behaviors need no remapping.
TYPE_CODE = {"impression": 0, **BEHAVIOR_TYPE_CODE}
assert set(TYPE_CODE) == set(EVENT_TYPES)
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1

# Accepted events between pipeline stages: raw string ids, typed values, and `seq`, the record's
# place in the input (task index << 32 | row), which breaks ties deterministically.
CLEAN = pa.schema(
    [
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("type", pa.int8(), nullable=False),
        pa.field("event_id", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("category_id", pa.string()),
        pa.field("seq", pa.int64(), nullable=False),
    ]
)


@dataclass
class Checked:
    """The outcome of checking one raw batch."""

    events: pa.Table  # accepted rows, CLEAN schema
    codes: np.ndarray  # int8 per raw row: 0 accepted, else CODE[reason]
    fields: np.ndarray  # per raw row: the field the reason is about, or None


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _arrow(values: Any) -> tuple[pa.Array | None, bool]:
    """Values as one Arrow array, and whether the type can be trusted (None: mixed Python types)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        return values, True
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return None, False
    # Arrow widens [1, 2.5] to double; only string, integer and all-null lists are taken whole.
    trusted = pa.types.is_string(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_null(arr.type)
    return (arr, True) if trusted else (None, False)


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes) of a string array as numpy views: offsets[i]:offsets[i + 1] is row i."""
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    if len(offsets) == 0:
        offsets = np.zeros(1, np.int32)
    data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return offsets.astype(np.int64), data


# The checks below scan the string bytes with numpy first and run Arrow's per-row kernels only
# where a row could be hit: ids with NUL bytes or blank ids are rare, and the kernels are not.


def _contains_nul(arr: pa.Array, offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    if not (data[offsets[0] : offsets[-1]] == 0).any():
        return np.zeros(len(arr), bool)
    return _np_bool(pc.match_substring(arr, "\x00"))


def _blank(arr: pa.Array, offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Non-null values that are empty or all whitespace (as utf8_trim_whitespace sees it)."""
    lengths = np.diff(offsets)
    blank = lengths == 0
    nonempty = np.flatnonzero(~blank)
    lead = data[offsets[:-1][nonempty]]
    # Only a value that starts with an ASCII control/space or a multi-byte character can be
    # whitespace throughout.
    suspect = nonempty[(lead <= 0x20) | (lead >= 0x80)]
    if len(suspect):
        trimmed = pc.utf8_trim_whitespace(arr.take(pa.array(suspect)))
        blank[suspect] = _np_bool(pc.equal(pc.utf8_length(trimmed), 0))
    return blank & _np_bool(arr.is_valid())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _id_column(values: Any, n: int) -> tuple[pa.Array, np.ndarray]:
    """String ids and a wrong-type mask; integers count as ids (CSV cannot tell 42 from "42")."""
    arr, trusted = _arrow(values)
    if not trusted:
        wrong = np.zeros(n, bool)
        out: list[str | None] = []
        for row, value in enumerate(values):
            if value is None or isinstance(value, str):
                out.append(value)
            elif _is_int(value):
                out.append(str(value))
            else:
                wrong[row] = True
                out.append(None)
        return pa.array(out, pa.string()), wrong
    assert arr is not None
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_integer(arr.type):
        return arr.cast(pa.string()), np.zeros(n, bool)
    if pa.types.is_null(arr.type):
        return pa.nulls(n, pa.string()), np.zeros(n, bool)
    return pa.nulls(n, pa.string()), _np_bool(arr.is_valid())


def _int_strings(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Integer strings -> (values, is an integer string); "3.0" counts, as CSV writers emit it."""
    values = np.zeros(len(arr), np.int64)
    ok = _np_bool(pc.match_substring_regex(arr, r"^\s*[-+]?\d{1,18}(\.0*)?\s*$"))
    if ok.any():
        digits = pc.replace_substring_regex(pc.utf8_trim_whitespace(arr.filter(ok)), r"\.0*$", "")
        values[ok] = pc.cast(digits, pa.int64()).to_numpy()
    return values, ok


def _parse_ts_strings(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Epoch-ms digits or ISO-8601 strings -> (epoch ms, unparseable) for every non-null value."""
    n = len(arr)
    valid = _np_bool(arr.is_valid())
    ts, digits = _int_strings(arr)
    iso = valid & ~digits
    bad = np.zeros(n, bool)
    if iso.any():
        parsed = pd.to_datetime(
            pd.Series(arr.filter(iso).to_pylist(), dtype=object), format="ISO8601", utc=True, errors="coerce"
        )
        failed = parsed.isna().to_numpy()
        ms = np.zeros(len(parsed), np.int64)
        ms[~failed] = parsed[~failed].dt.tz_convert(None).to_numpy().astype("datetime64[ms]").astype(np.int64)
        ts[iso] = ms
        bad[iso] = failed
    return ts, bad


def _ts_column(values: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> (epoch ms, missing, wrong type, unparseable)."""
    arr, trusted = _arrow(values)
    ts = np.zeros(n, np.int64)
    missing = np.zeros(n, bool)
    wrong = np.zeros(n, bool)
    bad = np.zeros(n, bool)
    if not trusted:
        strings: list[str] = []
        string_rows: list[int] = []
        for row, value in enumerate(values):
            if value is None:
                missing[row] = True
            elif isinstance(value, str):
                strings.append(value)
                string_rows.append(row)
            elif _is_int(value):
                if abs(value) <= _INT64_MAX:
                    ts[row] = value
                else:
                    bad[row] = True
            else:
                wrong[row] = True
        if strings:
            parsed, failed = _parse_ts_strings(pa.array(strings, pa.string()))
            ts[string_rows] = parsed
            bad[string_rows] = failed
        return ts, missing, wrong, bad
    assert arr is not None
    missing = _np_bool(arr.is_null())
    if pa.types.is_integer(arr.type):
        try:
            ts = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy()
        except pa.ArrowInvalid:  # uint64 beyond int64
            bad = ~missing
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        ts, bad = _parse_ts_strings(arr.cast(pa.string()))
    elif pa.types.is_timestamp(arr.type):
        ts = pc.fill_null(arr.cast(pa.timestamp("ms", tz=arr.type.tz)).cast(pa.int64()), 0).to_numpy()
    elif not pa.types.is_null(arr.type):
        wrong = ~missing
    return ts.astype(np.int64, copy=False), missing, wrong, bad


def _position_column(values: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (position, null, wrong type); numeric strings count as positions (CSV)."""
    arr, trusted = _arrow(values)
    pos = np.zeros(n, np.int64)
    null = np.zeros(n, bool)
    wrong = np.zeros(n, bool)
    if not trusted:
        strings: list[str] = []
        string_rows: list[int] = []
        for row, value in enumerate(values):
            if value is None:
                null[row] = True
            elif _is_int(value) and abs(value) <= _INT64_MAX:
                pos[row] = value
            elif isinstance(value, str):
                strings.append(value)
                string_rows.append(row)
            else:
                wrong[row] = True
        if strings:
            parsed, numeric = _int_strings(pa.array(strings, pa.string()))
            pos[string_rows] = parsed
            wrong[string_rows] = ~numeric
    else:
        assert arr is not None
        null = _np_bool(arr.is_null())
        if pa.types.is_integer(arr.type):
            try:
                pos = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy()
            except pa.ArrowInvalid:
                wrong = ~null
        elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            pos, numeric = _int_strings(arr.cast(pa.string()))
            wrong = ~null & ~numeric
        elif not pa.types.is_null(arr.type):
            wrong = ~null
    wrong |= ~null & ~wrong & (pos > _INT32_MAX)
    return pos.astype(np.int64, copy=False), null, wrong


def normalize(raw: RawBatch, task: ReadTask, now_ms: int, min_ts_ms: int = MIN_TS_MS) -> Checked:
    """Check every row of `raw`; each rejected row gets the first reason in REASONS order.

    `min_ts_ms` is 2000-01-01 for logs; adapters of older public data sets pass their own bound.
    """
    n = raw.n
    codes = raw.pre.astype(np.int8, copy=True)
    fields = np.full(n, None, dtype=object)
    masks: dict[str, list[tuple[str | None, np.ndarray]]] = defaultdict(list)

    ids: dict[str, pa.Array] = {}
    for name in (*ID_FIELDS, "event_type"):
        arr, wrong = _id_column(raw.columns[name], n)
        masks["wrong_type"].append((name, wrong))
        offsets, data = _string_buffers(arr)
        masks["nul_byte"].append((name, _contains_nul(arr, offsets, data)))
        masks["oversized_id"].append((name, (np.diff(offsets) > MAX_ID_BYTES) & _np_bool(arr.is_valid())))
        blank = _blank(arr, offsets, data)
        if name in REQUIRED_IDS:
            masks["empty_id"].append((name, blank))
        elif blank.any():
            # An empty optional id is how CSV (and many JSON writers) say "absent".
            arr = pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), arr)
        if name in (*REQUIRED_IDS, "event_type"):
            masks["missing_field"].append((name, _np_bool(arr.is_null()) & ~wrong))
        ids[name] = arr

    ts, ts_missing, ts_wrong, ts_bad = _ts_column(raw.columns["ts"], n)
    masks["missing_field"].insert(0, ("ts", ts_missing))
    masks["wrong_type"].insert(0, ("ts", ts_wrong))
    masks["bad_timestamp"].append(("ts", ts_bad))
    ts_ok = ~(ts_missing | ts_wrong | ts_bad)
    masks["ts_before_2000"].append(("ts", ts_ok & (ts < min_ts_ms)))
    masks["ts_in_future"].append(("ts", ts_ok & (ts > now_ms + FUTURE_SLACK_MS)))

    event_type = ids["event_type"]
    known = _np_bool(pc.is_in(event_type, value_set=pa.array(EVENT_TYPES)))
    masks["unknown_event_type"].append(("event_type", _np_bool(event_type.is_valid()) & ~known))

    position, pos_null, pos_wrong = _position_column(raw.columns["position"], n)
    masks["wrong_type"].append(("position", pos_wrong))
    masks["negative_position"].append(("position", ~pos_null & ~pos_wrong & (position < 0)))

    for reason in REASONS:
        for field_name, mask in masks.get(reason, ()):
            hit = mask & (codes == 0)
            if hit.any():
                codes[hit] = CODE[reason]
                fields[hit] = field_name

    ok = codes == 0
    type_code = np.zeros(n, np.int8)
    for name, code in TYPE_CODE.items():
        type_code[_np_bool(pc.equal(event_type, name))] = code
    table = pa.table(
        {
            "ts": pa.array(ts),
            "user_id": ids["user_id"],
            "item_id": ids["item_id"],
            "type": pa.array(type_code),
            "event_id": ids["event_id"],
            "request_id": ids["request_id"],
            "position": pa.array(np.where(pos_null, 0, position), mask=pos_null),
            "category_id": ids["category_id"],
            "seq": pa.array((task.index << 32) + (raw.lines - task.first_line)),
        }
    ).filter(pa.array(ok))
    events = table.set_column(
        table.schema.get_field_index("position"), "position", table.column("position").cast(pa.int32())
    ).cast(CLEAN)
    return Checked(events, codes, fields)


def dead_letters(raw: RawBatch, checked: Checked, source: str) -> list[dict[str, Any]]:
    """One dead-letter row per rejected record, in input order."""
    rows = []
    for row in np.flatnonzero(checked.codes):
        rows.append(
            {
                "reason": REASONS[checked.codes[row] - 1],
                "field": checked.fields[row],
                "source": source,
                "line": int(raw.lines[row]),
                "record": raw.record(int(row)),
            }
        )
    return rows
