"""A synthetic ingest output for the training tests, with a click signal only the history reveals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from seqrank.schema import BEHAVIORS, EXAMPLES, ITEMS, VOCAB
from seqrank.storage import write_table

T0 = 1_767_225_600_000  # 2026-01-01 in epoch ms
SPAN = 30 * 86_400_000
SIGNAL_WINDOW = 20  # the label looks at this many latest behaviors


def write_training_ingest(
    out: Path,
    users: int = 200,
    items: int = 300,
    categories: int = 12,
    impressions: int = 40,
    seed: int = 0,
) -> Path:
    """Write examples/, behaviors/, vocab/, items/ and manifest.json under `out`.

    Each user's behaviors come mostly from two favourite categories. An impression is clicked with
    probability 0.85 when the candidate's category appears among the user's last SIGNAL_WINDOW
    behaviors before the impression, else 0.05: a model that reads the history by category can
    learn it, one that ignores it cannot. Users 1..3 have no behaviors; the last two user ids are
    in the vocab but have no behaviors row and no examples. Examples split by time 70/15/15.
    """
    rng = np.random.default_rng(seed)
    item_category, by_category = _catalogue(rng, items, categories)

    behavior_rows, example_rows = [], []
    for user in range(1, users + 1):
        n = 0 if user <= 3 else int(rng.integers(1, 60))
        favourites = rng.choice(np.arange(1, categories + 1), size=2, replace=False)
        picks = np.where(
            rng.random(n) < 0.9, rng.choice(favourites, size=n), rng.integers(1, categories + 1, n)
        )
        seq_items = np.array([rng.choice(by_category[c]) for c in picks], dtype=np.int64)
        seq_ts = T0 + np.sort(rng.choice(SPAN, size=n, replace=False))
        behavior_rows.append(_behavior_row(user, seq_items, item_category[seq_items], seq_ts))
        when = T0 + rng.integers(0, SPAN, size=impressions)
        # Half of the candidates from the favourite categories, so both labels are common.
        candidates = np.where(
            rng.random(impressions) < 0.5,
            [rng.choice(by_category[c]) for c in rng.choice(favourites, size=impressions)],
            rng.integers(1, items + 1, size=impressions),
        )
        for k in range(impressions):
            hist_end = int(np.searchsorted(seq_ts, when[k], side="left"))  # strictly before
            recent = set(item_category[seq_items[max(0, hist_end - SIGNAL_WINDOW) : hist_end]].tolist())
            item = int(candidates[k])
            p_click = 0.85 if int(item_category[item]) in recent else 0.05
            example_rows.append(
                {
                    "user": user,
                    "item": item,
                    "category": int(item_category[item]),
                    "ts": int(when[k]),
                    "label": int(rng.random() < p_click),
                    "position": k % 10 + 1,
                    "split": "",
                    "hist_end": hist_end,
                    "session": 0,
                    "event_id": f"e{user}-{k}",
                    "request_id": f"r{user}-{k // 10}",
                }
            )
    _split_by_time(example_rows)

    half = len(example_rows) // 2  # two files, as a Beam sink writes shards
    examples = pa.Table.from_pylist(example_rows, EXAMPLES)
    write_table(examples.slice(0, half), out / "examples" / "part-00000.parquet", EXAMPLES)
    write_table(examples.slice(half), out / "examples" / "part-00001.parquet", EXAMPLES)
    # Rows in reverse user order: readers must not rely on the file being sorted.
    behaviors = pa.Table.from_pylist(behavior_rows[::-1], BEHAVIORS)
    write_table(behaviors, out / "behaviors" / "part-00000.parquet", BEHAVIORS)

    _write_side_tables(
        out,
        {"user": users + 2, "item": items, "category": categories, "brand": 5},
        item_category,
        brand=(np.arange(items) % 5 + 1).tolist(),
        price=rng.uniform(1, 100, size=items).tolist(),
        manifest={"examples": len(example_rows), "users": users, "items": items, "seed": seed},
    )
    return out


def write_long_term_ingest(
    out: Path,
    users: int = 1_500,
    items: int = 800,
    categories: int = 40,
    impressions: int = 8,
    short_window: int = 10,
    seed: int = 0,
) -> Path:
    """Write an ingest output (as `write_training_ingest`) whose clicks follow long-term interests.

    Each user first browses 4 long-term interest categories (20 to 40 behaviors, 10% off-interest),
    then 12 to 20 behaviors in 2 other, recent categories; impressions come after the whole
    history. A candidate is clicked with probability 0.04 + 0.6·[its category occurs in the user's
    behaviors older than the last `short_window`] + 0.25·[it occurs in the last `short_window`]:
    a strong signal only a search over the whole history sees, and a weaker one in the short
    window. Candidates come a third each from the long-term and the recent categories and at
    random. Histories stay under 64 behaviors, within a long_seq_len of 64. Examples split by
    time 70/15/15.
    """
    rng = np.random.default_rng(seed)
    item_category, by_category = _catalogue(rng, items, categories)
    last_behavior = T0 + SPAN

    behavior_rows, example_rows = [], []
    for user in range(1, users + 1):
        chosen = rng.choice(np.arange(1, categories + 1), size=6, replace=False)
        long_term, recent = chosen[:4], chosen[4:]
        n_old, n_recent = int(rng.integers(20, 41)), int(rng.integers(12, 21))
        old = np.where(
            rng.random(n_old) < 0.9, rng.choice(long_term, size=n_old), rng.integers(1, categories + 1, n_old)
        )
        picks = np.concatenate([old, rng.choice(recent, size=n_recent)])
        seq_items = np.array([rng.choice(by_category[c]) for c in picks], dtype=np.int64)
        n = len(seq_items)
        seq_ts = np.sort(last_behavior - rng.choice(SPAN, size=n, replace=False))
        seq_categories = item_category[seq_items]
        behavior_rows.append(_behavior_row(user, seq_items, seq_categories, seq_ts))
        older = set(seq_categories[: n - short_window].tolist())
        latest = set(seq_categories[n - short_window :].tolist())
        source = rng.integers(0, 3, size=impressions)
        when = last_behavior + 1 + rng.integers(0, 86_400_000, size=impressions)
        for k in range(impressions):
            if source[k] == 0:
                item = int(rng.choice(by_category[int(rng.choice(long_term))]))
            elif source[k] == 1:
                item = int(rng.choice(by_category[int(rng.choice(recent))]))
            else:
                item = int(rng.integers(1, items + 1))
            category = int(item_category[item])
            p_click = 0.04 + 0.6 * (category in older) + 0.25 * (category in latest)
            example_rows.append(
                {
                    "user": user,
                    "item": item,
                    "category": category,
                    "ts": int(when[k]),
                    "label": int(rng.random() < p_click),
                    "position": k + 1,
                    "split": "",
                    "hist_end": n,
                    "session": 0,
                    "event_id": f"e{user}-{k}",
                    "request_id": f"r{user}",
                }
            )
    _split_by_time(example_rows)

    write_table(
        pa.Table.from_pylist(example_rows, EXAMPLES), out / "examples" / "part-00000.parquet", EXAMPLES
    )
    write_table(
        pa.Table.from_pylist(behavior_rows, BEHAVIORS), out / "behaviors" / "part-00000.parquet", BEHAVIORS
    )
    _write_side_tables(
        out,
        {"user": users, "item": items, "category": categories, "brand": 1},
        item_category,
        brand=[1] * items,
        price=[1.0] * items,
        manifest={"examples": len(example_rows), "users": users, "items": items, "seed": seed},
    )
    return out


def _catalogue(rng: np.random.Generator, items: int, categories: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each item's category (index 0 is PAD), and each category's items (all items for an empty one)."""
    item_category = np.concatenate(([0], rng.integers(1, categories + 1, size=items)))
    by_category = [np.flatnonzero(item_category == c) for c in range(categories + 1)]
    return item_category, [c if len(c) else np.arange(1, items + 1) for c in by_category]


def _behavior_row(user: int, items: np.ndarray, categories: np.ndarray, ts: np.ndarray) -> dict:
    """One BEHAVIORS row: every behavior a click, sessions of 5."""
    return {
        "user": user,
        "item": items.tolist(),
        "category": categories.tolist(),
        "ts": ts.tolist(),
        "type": [1] * len(items),
        "session": (np.arange(len(items)) // 5).tolist(),
    }


def _split_by_time(example_rows: list[dict]) -> None:
    """Set each row's split by time: the first 70% train, the next 15% valid, the rest test."""
    stamps = np.array([row["ts"] for row in example_rows])
    valid_from, test_from = np.quantile(stamps, [0.7, 0.85])
    for row in example_rows:
        row["split"] = "train" if row["ts"] < valid_from else ("valid" if row["ts"] < test_from else "test")


def _write_side_tables(
    out: Path,
    sizes: dict[str, int],
    item_category: np.ndarray,
    brand: list[int],
    price: list[float],
    manifest: dict,
) -> None:
    """vocab/ (indices 1..size per entity), items/ and manifest.json."""
    for entity, size in sizes.items():
        rows = {"raw": [f"{entity}-{i}" for i in range(1, size + 1)], "index": list(range(1, size + 1))}
        write_table(pa.table(rows), out / "vocab" / f"{entity}.parquet", VOCAB)
    item_rows = {
        "item": list(range(1, len(item_category))),
        "category": item_category[1:].tolist(),
        "brand": brand,
        "price": price,
    }
    write_table(pa.table(item_rows), out / "items" / "part-00000.parquet", ITEMS)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
