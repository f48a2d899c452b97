"""Dataset-level checks: volume, uniqueness, referential integrity, domains and the label join.

The GX suites (`suites.py`) look at one table at a time, column by column; these look at whole
tables and at how the tables of one ingest output relate, as TFDV's dataset constraints do. They
run on whole Arrow/numpy columns (a few vectorized passes, no Python per row) so that they add
little to the step, and report each failure as the suites do: suite, check, observed, bound.
`docs/validation.md` lists every check with its config field.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.validate.failures import Failure
from seqrank.config import ValidateConfig
from seqrank.schema import (
    BEHAVIOR_TYPE_CODE,
    BEHAVIORS,
    EXAMPLES,
    ITEMS,
    SPLITS,
    USERS,
    VOCAB,
    VOCAB_ENTITIES,
)
from seqrank.storage import read_json, read_table

log = logging.getLogger(__name__)

UNKNOWN_POSITION = -1  # what ingest writes for an impression logged without a position
_SAMPLE = 5  # offending values quoted in a failure
_LOOKUP_MAX = 50_000_000  # ids up to this are looked up in a dense table, larger ones with np.isin
_OPTIONAL = ("event_id", "request_id")


@dataclass(frozen=True)
class Outputs:
    """The tables of one ingest output that the checks read, and its manifest ({} when absent)."""

    examples: pa.Table
    behaviors: pa.Table
    items: pa.Table | None
    users: pa.Table | None
    vocab: dict[str, pa.Table]
    manifest: dict[str, Any]


def load(data_dir: Path, examples: pa.Table, behaviors: pa.Table) -> Outputs:
    """The side tables, vocab and manifest of `data_dir` beside its already read examples and behaviors."""
    data_dir = Path(data_dir)

    def optional(name: str) -> pa.Table | None:
        path = data_dir / name
        return read_table(path) if path.exists() and any(path.glob("*.parquet")) else None

    vocab = {
        entity: read_table(data_dir / "vocab" / f"{entity}.parquet")
        for entity in VOCAB_ENTITIES
        if (data_dir / "vocab" / f"{entity}.parquet").exists()
    }
    manifest_path = data_dir / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    return Outputs(examples, behaviors, optional("items"), optional("users"), vocab, manifest)


def _conforms(table: pa.Table | None, schema: pa.Schema) -> bool:
    """Every required column of `schema` is there with its type (the suites name what is not)."""
    if table is None:
        return False
    for f in schema:
        index = table.schema.get_field_index(f.name)
        if index < 0:
            if f.name in _OPTIONAL:
                continue
            return False
        if not table.schema.field(index).type.equals(f.type):
            return False
    return True


@dataclass(frozen=True)
class _Flat:
    """The behaviors' list columns flattened: row r's behaviors are [offsets[r], offsets[r + 1])."""

    user: np.ndarray
    item: np.ndarray
    category: np.ndarray
    ts: np.ndarray
    type: np.ndarray
    offsets: np.ndarray


def _flatten(behaviors: pa.Table) -> _Flat | None:
    """None when the list columns disagree in length (the behaviors suite names that)."""
    columns = {}
    offsets = None
    for name in ("item", "category", "ts", "type"):
        col = behaviors.column(name).combine_chunks()
        own = col.offsets.to_numpy() - col.offsets[0].as_py()  # a sliced array's offsets start later
        if offsets is not None and not np.array_equal(own, offsets):
            return None
        offsets = own
        columns[name] = pc.list_flatten(col).to_numpy()
    assert offsets is not None
    user = np.repeat(behaviors.column("user").to_numpy(), np.diff(offsets))
    return _Flat(user=user, offsets=offsets, **columns)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _sample(values: np.ndarray) -> list[Any]:
    return np.unique(values)[:_SAMPLE].tolist()


def _absent(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Mask of the `values` that are not among `keys` (integer ids)."""
    if not len(keys):
        return np.ones(len(values), bool)
    top, low = int(keys.max()), int(keys.min())
    if low < 0 or top > _LOOKUP_MAX:
        return ~np.isin(values, keys)
    known = np.zeros(top + 2, bool)
    known[keys] = True
    inside = (values >= 0) & (values <= top)
    return ~known[np.where(inside, values, top + 1)]


@dataclass
class _Run:
    """What one pass of the checks found: failures, the figures reported, the checks skipped."""

    cfg: ValidateConfig
    failures: list[Failure] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def fail(self, suite: str, check: str, column: str, observed: Any, bound: dict[str, Any]) -> None:
        self.failures.append(Failure(suite, check, column, observed, bound))


# ---- volume ---------------------------------------------------------------------------------------


def counts(outputs: Outputs) -> dict[str, int]:
    """Row counts of every output: raw events read and accepted (from the manifest), examples per
    split, behaviors rows (users with a history) and events, users/ and items/ rows."""
    found: dict[str, int] = {}
    for key, name in (("read", "raw_events_read"), ("accepted", "raw_events_accepted")):
        if isinstance(outputs.manifest.get(key), int):
            found[name] = outputs.manifest[key]
    examples, behaviors = outputs.examples, outputs.behaviors
    if "split" in examples.column_names:
        by_split = {
            row["values"]: row["counts"] for row in pc.value_counts(examples.column("split")).to_pylist()
        }
        found |= {f"examples_{name}": int(by_split.get(name, 0)) for name in SPLITS}
    found["behaviors"] = behaviors.num_rows
    if "item" in behaviors.column_names:
        found["behavior_events"] = int(pc.sum(pc.list_value_length(behaviors.column("item"))).as_py() or 0)
    for name, table in (("users", outputs.users), ("items", outputs.items)):
        if table is not None:
            found[name] = table.num_rows
    return found


def _volume(run: _Run, current: dict[str, int], previous: dict[str, int] | None) -> None:
    cfg = run.cfg
    for split, minimum in zip(
        SPLITS, (cfg.min_train_examples, cfg.min_valid_examples, cfg.min_test_examples), strict=True
    ):
        n = current.get(f"examples_{split}")
        if n is not None and n < minimum:
            run.fail("volume", "min_row_count", f"examples_{split}", n, {"min_value": minimum})
    if previous is None:
        run.skipped.append("volume.row_count_vs_accepted: no accepted run to compare with")
        return
    for name, now in current.items():
        before = previous.get(name)
        if not before:
            continue  # not counted then (or empty): nothing to scale against
        ratio = now / before
        if not cfg.volume_min_ratio <= ratio <= cfg.volume_max_ratio:
            run.fail(
                "volume",
                "row_count_vs_accepted",
                name,
                f"{ratio:.4f} ({now:,} rows; accepted run {before:,})",
                {"min_value": cfg.volume_min_ratio, "max_value": cfg.volume_max_ratio},
            )


# ---- uniqueness -----------------------------------------------------------------------------------


def _repeated(table: pa.Table, keys: list[str]) -> tuple[int, list[Any]]:
    """Rows beyond the first of their key, and a few of the repeated keys."""
    if len(keys) == 1:
        distinct = len(pc.unique(table.column(keys[0]).combine_chunks()))
        if distinct == table.num_rows:
            return 0, []
    groups = table.select(keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
    extra = table.num_rows - groups.num_rows
    if not extra:
        return 0, []
    repeated = groups.filter(pc.greater(groups.column("count_all"), 1)).slice(0, _SAMPLE)
    sample = [row[keys[0]] if len(keys) == 1 else tuple(row[k] for k in keys) for row in repeated.to_pylist()]
    return extra, sample


def _unique(run: _Run, name: str, table: pa.Table, keys: list[str]) -> None:
    extra, sample = _repeated(table, keys)
    if extra:
        column = f"{name}.{keys[0]}" if len(keys) == 1 else f"{name}.({', '.join(keys)})"
        run.fail(
            "uniqueness", "unique_key", column, f"{extra} rows repeat a key (e.g. {sample})", {"max_value": 0}
        )


def _uniqueness(run: _Run, outputs: Outputs) -> None:
    examples = outputs.examples
    if _conforms(examples, EXAMPLES):
        # An impression is its event_id when ingest had one for every row, else its whole content.
        ids = examples.column("event_id") if "event_id" in examples.column_names else None
        if ids is not None and ids.null_count == 0:
            _unique(run, "examples", examples, ["event_id"])
        else:
            content = ["user", "item", "ts", "position", "request_id", "event_id"]
            _unique(run, "examples", examples, [c for c in content if c in examples.column_names])
    else:
        run.skipped.append("uniqueness: examples do not match the schema")
    for entity, table in outputs.vocab.items():
        if _conforms(table, VOCAB):
            _unique(run, f"vocab/{entity}", table, ["raw"])
            _unique(run, f"vocab/{entity}", table, ["index"])
    for name, table, schema, key in (
        ("items", outputs.items, ITEMS, "item"),
        ("users", outputs.users, USERS, "user"),
    ):
        if _conforms(table, schema):
            assert table is not None
            _unique(run, name, table, [key])


# ---- referential integrity ------------------------------------------------------------------------


def _references(run: _Run, outputs: Outputs, flat: _Flat | None) -> None:
    vocab_index = {
        entity: table.column("index").to_numpy()
        for entity, table in outputs.vocab.items()
        if _conforms(table, VOCAB)
    }
    items = outputs.items
    item_keys = items.column("item").to_numpy() if items is not None and _conforms(items, ITEMS) else None
    examples = outputs.examples if _conforms(outputs.examples, EXAMPLES) else None
    pairs: list[tuple[str, np.ndarray | None, str, np.ndarray | None]] = [
        ("examples.user", None if examples is None else examples.column("user").to_numpy(), "vocab/user",
         vocab_index.get("user")),
        ("examples.item", None if examples is None else examples.column("item").to_numpy(), "vocab/item",
         vocab_index.get("item")),
        ("examples.item", None if examples is None else examples.column("item").to_numpy(), "items",
         item_keys),
        ("behaviors.user", outputs.behaviors.column("user").to_numpy(), "vocab/user", vocab_index.get("user")),
        ("behaviors.item", None if flat is None else flat.item, "items", item_keys),
    ]  # fmt: skip
    for column, values, target, keys in pairs:
        if values is None or keys is None:
            run.skipped.append(f"references: {column} -> {target} (one side missing or malformed)")
            continue
        absent = _absent(values, keys)
        if absent.any():
            run.fail(
                "references",
                "values_in_table",
                column,
                f"{int(absent.sum())} rows name no row of {target} (e.g. {_sample(values[absent])})",
                {
                    "value_set": f"{target} {'index' if target.startswith('vocab') else 'item'}",
                    "max_value": 0,
                },
            )


# ---- domains --------------------------------------------------------------------------------------


def _outside(run: _Run, column: str, ts: np.ndarray, low: int | None, high: int) -> None:
    bad = (ts > high) | ((ts < low) if low is not None else False)
    if bad.any():
        wrong = ts[bad]
        run.fail(
            "domains",
            "ts_in_ingest_window",
            column,
            f"{int(bad.sum())} rows outside (from {_iso(int(wrong.min()))} to {_iso(int(wrong.max()))})",
            {"min_value": _iso(low) if low is not None else None, "max_value": _iso(high)},
        )


def _category_mismatch(
    run: _Run, column: str, item: np.ndarray, category: np.ndarray, items: pa.Table
) -> None:
    keys = items.column("item").to_numpy()
    if not len(keys) or not len(item) or keys.min() < 0 or keys.max() > _LOOKUP_MAX:
        return
    of_item = np.full(int(keys.max()) + 2, -1, np.int64)
    of_item[keys] = items.column("category").to_numpy()
    listed = (item >= 0) & (item <= keys.max())
    expected = of_item[np.where(listed, item, -1)]
    listed &= expected >= 0  # items items/ lacks are the references suite's finding
    wrong = listed & (expected != category)
    share = float(wrong.sum() / max(int(listed.sum()), 1))
    if share > run.cfg.max_category_mismatch_share:
        i = int(np.flatnonzero(wrong)[0])
        run.fail(
            "domains",
            "category_matches_items",
            column,
            f"{share:.4f} ({int(wrong.sum())} of {int(listed.sum())}; e.g. item {int(item[i])}: "
            f"category {int(category[i])} here, {int(expected[i])} in items)",
            {"max_value": run.cfg.max_category_mismatch_share},
        )


def _domains(run: _Run, outputs: Outputs, flat: _Flat | None) -> None:
    cfg = run.cfg
    examples = outputs.examples if _conforms(outputs.examples, EXAMPLES) else None
    if examples is not None:
        position = examples.column("position").to_numpy()
        bad = (position != UNKNOWN_POSITION) & ((position < 0) | (position > cfg.max_position))
        if bad.any():
            run.fail(
                "domains",
                "position_in_range",
                "examples.position",
                f"{int(bad.sum())} rows outside (e.g. {_sample(position[bad])})",
                {"min_value": 0, "max_value": cfg.max_position, "unknown": UNKNOWN_POSITION},
            )
    span = outputs.manifest.get("time_range")
    if span:
        low, high = int(span["min_ms"]), int(span["max_ms"])
        if examples is not None:
            _outside(run, "examples.ts", examples.column("ts").to_numpy(), low, high)
        if flat is not None:
            # A backfill window's history reaches back before its start; it ends with the window.
            windowed = (outputs.manifest.get("window") or {}).get("start") is not None
            _outside(run, "behaviors.ts", flat.ts, None if windowed else low, high)
    else:
        run.skipped.append("domains.ts_in_ingest_window: the manifest has no time_range")
    if _conforms(outputs.items, ITEMS):
        assert outputs.items is not None
        if flat is not None:
            _category_mismatch(run, "behaviors.category", flat.item, flat.category, outputs.items)
        if examples is not None:
            items = examples.column("item").to_numpy()
            _category_mismatch(
                run, "examples.category", items, examples.column("category").to_numpy(), outputs.items
            )
    else:
        run.skipped.append("domains.category_matches_items: no items table")


# ---- the label join -------------------------------------------------------------------------------


def _pair_key(user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    return user.astype(np.int64) * n_items + item.astype(np.int64)


def _unmatched_clicks(run: _Run, examples: pa.Table, flat: _Flat) -> None:
    """Clicks in the behaviors that labeled no impression of the same user and item at or before them.

    Ingest labels an impression with a click of the same request (or, without a request id, a
    click within the attribution window); a click that labeled nothing had its impression lost
    (rejected, deduplicated away, never logged) or the join missed. Clicks before the first
    impression are left out: a backfill window's history holds clicks on earlier impressions.
    """
    label = examples.column("label").to_numpy()
    ts = examples.column("ts").to_numpy()
    click = flat.type == BEHAVIOR_TYPE_CODE["click"]
    if len(ts):
        click &= flat.ts >= ts.min()
    n_clicks = int(click.sum())
    if not n_clicks:
        run.report["label_join"] |= {"clicks": 0, "unmatched_clicks": 0, "unmatched_click_share": 0.0}
        return
    positive = label == 1
    ex_user, ex_item = (
        examples.column("user").to_numpy()[positive],
        examples.column("item").to_numpy()[positive],
    )
    c_user, c_item, c_ts = flat.user[click], flat.item[click], flat.ts[click]
    n_items = int(max(ex_item.max(initial=0), c_item.max(initial=0))) + 1
    if int(max(ex_user.max(initial=0), c_user.max(initial=0))) >= np.iinfo(np.int64).max // n_items:
        # Ids too large to pair in one int64: pair their ranks instead.
        _, inverse = np.unique(np.concatenate([ex_user, c_user]), return_inverse=True)
        ex_user, c_user = inverse[: len(ex_user)], inverse[len(ex_user) :]
        _, inverse = np.unique(np.concatenate([ex_item, c_item]), return_inverse=True)
        ex_item, c_item = inverse[: len(ex_item)], inverse[len(ex_item) :]
        n_items = int(inverse.max(initial=0)) + 1
    key = _pair_key(ex_user, ex_item, n_items)
    order = np.argsort(key, kind="stable")
    key, first_ts = key[order], ts[positive][order]
    starts = np.flatnonzero(np.diff(key, prepend=key[:1] - 1)) if len(key) else np.zeros(0, np.int64)
    keys, earliest = key[starts], np.minimum.reduceat(first_ts, starts) if len(starts) else first_ts[:0]
    c_key = _pair_key(c_user, c_item, n_items)
    at = np.minimum(np.searchsorted(keys, c_key), max(len(keys) - 1, 0))
    matched = (keys[at] == c_key) & (earliest[at] <= c_ts) if len(keys) else np.zeros(n_clicks, bool)
    unmatched = int(n_clicks - matched.sum())
    share = unmatched / n_clicks
    run.report["label_join"] |= {
        "clicks": n_clicks,
        "unmatched_clicks": unmatched,
        "unmatched_click_share": round(share, 6),
    }
    if share > run.cfg.max_unmatched_click_share:
        lone = np.flatnonzero(~matched)[:_SAMPLE]
        sample = [
            (int(u), int(i), int(t))
            for u, i, t in zip(flat.user[click][lone], flat.item[click][lone], c_ts[lone], strict=True)
        ]
        run.fail(
            "label_join",
            "unmatched_click_share",
            "behaviors.click",
            f"{share:.4f} ({unmatched} of {n_clicks} clicks; e.g. (user, item, ts) {sample})",
            {"max_value": run.cfg.max_unmatched_click_share},
        )


def _ctr_by_position(run: _Run, outputs: Outputs) -> None:
    """CTR should fall with the slate position; a rise past the tolerance means broken positions or labels."""
    cfg = run.cfg
    examples = outputs.examples
    position = examples.column("position").to_numpy()
    label = examples.column("label").to_numpy()
    known = (position >= 0) & (position <= cfg.max_position)
    shown = np.bincount(position[known], minlength=1)
    clicks = np.bincount(position[known], weights=label[known], minlength=1)
    ctr = {int(p): round(float(clicks[p] / shown[p]), 6) for p in np.flatnonzero(shown)}
    compared = [int(p) for p in np.flatnonzero(clicks >= cfg.min_position_clicks)]
    run.report["label_join"] |= {"ctr_by_position": ctr, "positions_compared": compared}
    if "adapter" in outputs.manifest:
        # The adapters' protocol puts the positive in a random slot: position carries no signal.
        run.skipped.append("label_join.ctr_falls_with_position: adapter data, positions are random slots")
        return
    if len(compared) < 2:
        run.skipped.append(
            f"label_join.ctr_falls_with_position: fewer than 2 positions with {cfg.min_position_clicks} clicks"
        )
        return
    rises = [(ctr[b] / ctr[a] - 1.0, a, b) for a, b in itertools.pairwise(compared)]
    rise, a, b = max(rises)
    run.report["label_join"]["max_ctr_rise"] = round(rise, 6)
    if rise > cfg.max_ctr_rise_by_position:
        run.fail(
            "label_join",
            "ctr_falls_with_position",
            "examples.position",
            f"{rise:.4f} (CTR {ctr[a]:.4f} at position {a}, {ctr[b]:.4f} at {b})",
            {"max_value": cfg.max_ctr_rise_by_position},
        )


def _label_join(run: _Run, outputs: Outputs, flat: _Flat | None) -> None:
    run.report["label_join"] = {}
    if not _conforms(outputs.examples, EXAMPLES):
        run.skipped.append("label_join: examples do not match the schema")
        return
    if flat is None:
        run.skipped.append("label_join.unmatched_click_share: behaviors do not match the schema")
    else:
        _unmatched_clicks(run, outputs.examples, flat)
    _ctr_by_position(run, outputs)


def check(
    outputs: Outputs, cfg: ValidateConfig, previous: dict[str, int] | None = None
) -> tuple[list[Failure], dict[str, Any]]:
    """Run every dataset-level check; return the failures and a report of what was measured.

    `previous` holds the row counts of the last accepted run (`counts`), the volume reference.
    """
    run = _Run(cfg)
    flat = _flatten(outputs.behaviors) if _conforms(outputs.behaviors, BEHAVIORS) else None
    current = counts(outputs)
    run.report["counts"] = current
    _volume(run, current, previous)
    _uniqueness(run, outputs)
    _references(run, outputs, flat)
    _domains(run, outputs, flat)
    _label_join(run, outputs, flat)
    run.report["skipped"] = run.skipped
    for reason in run.skipped:
        log.info("dataset check skipped: %s", reason)
    return run.failures, run.report
