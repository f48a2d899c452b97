"""Adapters that turn public data sets (MovieLens, Taobao UserBehavior, Amazon reviews) into raw events.

None of these data sets logs impressions, so every adapter follows the common protocol for them:
each positive behavior that makes an example becomes one ranking request holding the positive item
and `negatives` items the user never interacted with (sampled uniformly from the data set's items,
seeded, so the same input gives the same requests), in a random slot order so that position says
nothing about the label. The request's click labels the positive; the history of an example is the
user's behaviors strictly before it, as for logged impressions.

The result is a table of raw events in the contract's columns (`RAW_EVENT`) plus an items side
table, which the same Beam pipeline then ingests. Rows that cannot be read become dead letters
here, with the same reasons as raw logs, and each adapter's own reconciliation
(`rows_read == rows_used + rejected + duplicates + filtered`) goes into the manifest.
"""

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
# Taobao UserBehavior covers 2017-11-25 to 2017-12-03 in China time (UTC+8); rows outside are noise.
TAOBAO_START_MS = 1_511_539_200_000  # 2017-11-25T00:00:00+08:00
TAOBAO_END_MS = 1_512_316_800_000  # 2017-12-04T00:00:00+08:00
TAOBAO_BEHAVIORS = {"pv": "click", "cart": "cart", "fav": "fav", "buy": "buy"}
MOVIELENS_POSITIVE_RATING = 4.0
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


def _read_csv(path: str, names: list[str], header: bool) -> _Rows:
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


def _read_json_lines(path: str, fields: tuple[str, ...], loose: bool = False) -> _Rows:
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


def _files(inputs: list[str]) -> list[Path]:
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


def _pick(files: list[Path], what: str, test: Callable[[Path], bool]) -> Path:
    matches = [f for f in files if test(f)]
    if len(matches) != 1:
        raise ValueError(f"expected exactly one {what} among the inputs, found {[str(m) for m in matches]}")
    return matches[0]


# ---- the common protocol: requests of one positive and sampled negatives -----------------------


def _requests(
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


def _items_table(item: np.ndarray, category: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "item_id": pa.array(item, pa.string()),
            "category_id": pa.array(category, pa.string()),
            "brand_id": pa.nulls(len(item), pa.string()),
            "price": pa.nulls(len(item), pa.float64()),
        },
        schema=RAW_ITEMS,
    )


def _order(user: np.ndarray, ts: np.ndarray, item: np.ndarray) -> np.ndarray:
    return np.lexsort((item, ts, user))


def _unique_rows(keys: list[np.ndarray]) -> np.ndarray:
    """Mask of the first row of each distinct key (identical source rows count once)."""
    frame = pd.DataFrame({str(i): k for i, k in enumerate(keys)})
    return ~frame.duplicated(keep="first").to_numpy()


def _report(
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


# ---- MovieLens ----------------------------------------------------------------------------------


def movielens(inputs: list[str], negatives: int, seed: int) -> Prepared:
    """MovieLens (`ratings.csv` + `movies.csv`, the "latest" / ml-20m / ml-25m CSV layout).

    Protocol (common CTR practice on MovieLens, e.g. DeepCTR/FuxiCTR's MovieLens tasks): a rating of
    4.0 or more is a positive behavior (a click) and one example with `negatives` sampled unrated
    movies; lower ratings are neither behaviors nor examples but still count as interactions, so
    they are never sampled as negatives. A movie's category is its first listed genre
    (`(no genres listed)` when none), a single categorical as DIN's category feature expects.
    Split: time-based, as for logs.
    """
    files = _files(inputs)
    ratings_path = _pick(files, "ratings.csv", lambda p: p.name == "ratings.csv")
    movies_path = _pick(files, "movies.csv", lambda p: p.name == "movies.csv")
    ratings = _read_csv(str(ratings_path), ["userId", "movieId", "rating", "timestamp"], header=True)
    ratings.require_ids("userId", "movieId")
    ts = ratings.integers("timestamp", "bad_timestamp") * MS
    rating = pd.to_numeric(ratings.column("rating"), errors="coerce").to_numpy()
    ratings.reject(np.isnan(rating) | (rating < 0) | (rating > 5), "wrong_type", "rating")
    ratings.reject(ts < PUBLIC_MIN_TS_MS, "bad_timestamp", "timestamp")
    ratings.finish()

    movies = _read_csv(str(movies_path), ["movieId", "title", "genres"], header=True)
    movies.require_ids("movieId")
    movies.finish()
    ok_movies = movies.accepted()
    movie_id = movies.column("movieId").to_numpy(object)[ok_movies]
    genres = movies.column("genres").fillna("").to_numpy(object)[ok_movies]
    genre = np.array([g.split("|")[0] if g else "(no genres listed)" for g in genres], dtype=object)

    ok = ratings.accepted()
    user = ratings.column("userId").to_numpy(object)[ok].astype(str)
    item = ratings.column("movieId").to_numpy(object)[ok].astype(str)
    ts, rating = ts[ok], rating[ok]
    first = _unique_rows([user, item, ts, rating])
    user, item, ts, rating = user[first], item[first], ts[first], rating[first]
    positive = rating >= MOVIELENS_POSITIVE_RATING
    order = _order(user[positive], ts[positive], item[positive])
    pu, pi, pt = user[positive][order], item[positive][order], ts[positive][order]
    events, stats = _requests(
        "ml",
        pu,
        pi,
        pt,
        np.full(len(pu), "click", dtype=object),
        np.ones(len(pu), bool),
        (user, item),
        np.concatenate([item, movie_id.astype(str)]),
        negatives,
        seed,
    )
    report = _report(
        "MovieLens: rating >= 4 is a click and an example with sampled unrated negatives; "
        "first genre is the category; time-based split",
        [ratings, movies],
        int((~first).sum()),
        {"rating_below_4": int((~positive).sum()), "item_metadata_rows": int(ok_movies.sum())},
        int(positive.sum()),
    )
    return Prepared(
        events,
        _items_table(movie_id.astype(str), genre),
        [str(ratings_path), str(movies_path)],
        ratings.dead + movies.dead,
        {**report, **stats},
    )


# ---- Taobao UserBehavior ------------------------------------------------------------------------


def taobao(inputs: list[str], negatives: int, seed: int) -> Prepared:
    """Taobao UserBehavior (Tianchi data set 649: `UserBehavior.csv`, no header,
    `user_id,item_id,category_id,behavior_type,timestamp` with behavior pv/cart/fav/buy, ts in s).

    Protocol (as in the data set's description and the DIN/DIEN/MIMN line of work on it): pv is a
    click, cart/fav/buy keep their types, all four are behaviors; each pv is a positive example
    with `negatives` sampled items the user never touched. Rows outside the published period
    (2017-11-25 to 2017-12-03, China time) are filtered, as the data set's notes advise.
    Categories come with every row. Split: time-based.
    """
    files = _files(inputs)
    sources = [_read_csv(str(p), ["user", "item", "category", "behavior", "ts"], header=False) for p in files]
    parts = []
    for rows in sources:
        rows.require_ids("user", "item", "category")
        behavior = rows.column("behavior").fillna("").str.strip().to_numpy(object)
        rows.reject(~np.isin(behavior, list(TAOBAO_BEHAVIORS)), "unknown_event_type", "behavior")
        ts = rows.integers("ts", "bad_timestamp") * MS
        rows.finish()
        ok = rows.accepted()
        parts.append(
            pd.DataFrame(
                {
                    "user": rows.column("user").to_numpy(object)[ok],
                    "item": rows.column("item").to_numpy(object)[ok],
                    "category": rows.column("category").to_numpy(object)[ok],
                    "kind": behavior[ok],
                    "ts": ts[ok],
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["user", "item"])
    first = _unique_rows([frame[c].to_numpy() for c in frame.columns])
    frame = frame[first]
    inside = ((frame["ts"] >= TAOBAO_START_MS) & (frame["ts"] < TAOBAO_END_MS)).to_numpy()
    frame = frame[inside]
    user = frame["user"].to_numpy().astype(str)
    item = frame["item"].to_numpy().astype(str)
    ts = frame["ts"].to_numpy(np.int64)
    order = _order(user, ts, item)
    user, item, ts = user[order], item[order], ts[order]
    kind = np.array([TAOBAO_BEHAVIORS[k] for k in frame["kind"].to_numpy()[order]], dtype=object)
    category = frame["category"].to_numpy().astype(str)[order]
    events, stats = _requests(
        "tb", user, item, ts, kind, kind == "click", (user, item), item, negatives, seed, category
    )
    # One category per item in the data set; the latest row's wins should two rows disagree.
    latest = pd.DataFrame({"item": item, "category": category, "ts": ts}).sort_values("ts", kind="stable")
    latest = latest.drop_duplicates("item", keep="last").sort_values("item")
    report = _report(
        "Taobao UserBehavior: pv=click, cart/fav/buy behaviors; each pv an example with sampled "
        "negatives; published period only; time-based split",
        sources,
        int((~first).sum()),
        {"outside_period": int((~inside).sum())},
        len(user),
    )
    return Prepared(
        events,
        _items_table(latest["item"].to_numpy(), latest["category"].to_numpy()),
        [str(p) for p in files],
        [d for rows in sources for d in rows.dead],
        {**report, **stats},
        min_ts_ms=TAOBAO_START_MS,
    )


# ---- Amazon reviews -----------------------------------------------------------------------------


def _din_category(meta: dict) -> str | None:
    """The category DIN's scripts take: the last entry of the item's last category path."""
    paths = meta.get("categories")
    if isinstance(paths, list) and paths and isinstance(paths[-1], list) and paths[-1]:
        last = paths[-1][-1]
        return last if isinstance(last, str) and last.strip() else None
    return None


def amazon(inputs: list[str], negatives: int, seed: int) -> Prepared:
    """Amazon product reviews (McAuley et al.'s 2014 release, e.g. `reviews_Electronics_5.json` and
    `meta_Electronics.json`; the metadata file is the one whose name starts with `meta`).

    Protocol of the DIN paper (Zhou et al. 2018, §6.1 and its data scripts): every review is a
    behavior (a click) and a positive example with sampled negatives (DIN samples one; here
    `negatives`); an item's category is the last entry of its last category path
    (`categories[-1][-1]`). Split per user, not by time: each user's last review is test, as in
    DIN; the one before it is valid (our addition, so early stopping has data).
    """
    files = _files(inputs)
    meta_path = _pick(files, "metadata file (meta*.json)", lambda p: p.name.startswith("meta"))
    review_paths = [p for p in files if p != meta_path]
    if not review_paths:
        raise ValueError("Amazon adapter needs a reviews file besides the metadata")
    sources = [_read_json_lines(str(p), ("reviewerID", "asin", "unixReviewTime")) for p in review_paths]
    parts = []
    for rows in sources:
        rows.require_ids("reviewerID", "asin")
        ts = rows.integers("unixReviewTime", "bad_timestamp") * MS
        rows.reject(ts < PUBLIC_MIN_TS_MS, "bad_timestamp", "unixReviewTime")
        rows.finish()
        ok = rows.accepted()
        parts.append(
            pd.DataFrame(
                {
                    "user": rows.column("reviewerID").to_numpy(object)[ok],
                    "item": rows.column("asin").to_numpy(object)[ok],
                    "ts": ts[ok],
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    first = _unique_rows([frame[c].to_numpy() for c in frame.columns])
    frame = frame[first]

    meta = _read_json_lines(str(meta_path), ("asin",), loose=True)
    meta.require_ids("asin")
    meta.finish()
    ok_meta = meta.accepted()
    meta_items = meta.column("asin").to_numpy(object)[ok_meta].astype(str)
    meta_category = np.array(
        [_din_category(obj) for obj, ok in zip(meta.objects, ok_meta, strict=True) if ok], dtype=object
    )
    named = np.array([c is not None for c in meta_category], bool)

    user = frame["user"].to_numpy().astype(str)
    item = frame["item"].to_numpy().astype(str)
    ts = frame["ts"].to_numpy(np.int64)
    order = _order(user, ts, item)
    user, item, ts = user[order], item[order], ts[order]
    events, stats = _requests(
        "az",
        user,
        item,
        ts,
        np.full(len(user), "click", dtype=object),
        np.ones(len(user), bool),
        (user, item),
        item,
        negatives,
        seed,
    )
    report = _report(
        "Amazon reviews as in DIN: every review a click and an example with sampled negatives; "
        "category = categories[-1][-1]; per user the last review is test, the one before valid",
        [*sources, meta],
        int((~first).sum()),
        {"item_metadata_rows": int(ok_meta.sum())},
        len(user),
    )
    return Prepared(
        events,
        _items_table(meta_items[named], meta_category[named]),
        [*(str(p) for p in review_paths), str(meta_path)],
        [d for rows in [*sources, meta] for d in rows.dead],
        {**report, **stats},
        split_mode="last_per_user",
    )
