"""A small ingest output built directly with Arrow, for tests of the steps after ingest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from seqrank.schema import BEHAVIORS, EXAMPLES, ITEMS, USERS, VOCAB
from seqrank.storage import write_table


def write_ingest_dir(out: Path, users: int = 60, items: int = 80, categories: int = 6, seed: int = 0) -> Path:
    """Users click items of one favourite category; an impression's label says whether the item is
    in it, so a model reading the history can learn it. Ids start at 1 (0 is PAD)."""
    rng = np.random.default_rng(seed)
    item_cat = rng.integers(1, categories + 1, size=items + 1)
    item_cat[0] = 0
    t0 = 1_767_225_600_000
    behaviors, examples = [], []
    for user in range(1, users + 1):
        favourite = int(rng.integers(1, categories + 1))
        n = int(rng.integers(5, 40))
        fav_items = np.flatnonzero(item_cat == favourite)
        items_seq = rng.choice(fav_items if len(fav_items) else np.arange(1, items + 1), size=n)
        ts = t0 + np.sort(rng.integers(0, 20 * 86_400_000, size=n))
        behaviors.append(
            {
                "user": user,
                "item": items_seq.tolist(),
                "category": item_cat[items_seq].tolist(),
                "ts": ts.tolist(),
                "type": [1] * n,
                "session": (np.arange(n) // 4).tolist(),
            }
        )
        for k in range(n):
            item = int(rng.integers(1, items + 1))
            when = int(ts[k]) + 1
            frac = k / n
            examples.append(
                {
                    "user": user,
                    "item": item,
                    "category": int(item_cat[item]),
                    "ts": when,
                    "label": int(item_cat[item] == favourite),
                    "position": int(rng.integers(1, 11)),
                    "split": "train" if frac < 0.7 else ("valid" if frac < 0.85 else "test"),
                    "hist_end": k + 1,
                    "session": k // 4,
                    "event_id": f"e{user}-{k}",
                    "request_id": f"r{user}-{k}",
                }
            )
    write_table(pa.Table.from_pylist(behaviors, BEHAVIORS), out / "behaviors" / "part-0.parquet", BEHAVIORS)
    write_table(pa.Table.from_pylist(examples, EXAMPLES), out / "examples" / "part-0.parquet", EXAMPLES)
    vocab = {"user": users, "item": items, "category": categories, "brand": 3}
    prefix = {"user": "u", "item": "i", "category": "c", "brand": "b"}
    for entity, n in vocab.items():
        rows = {"raw": [f"{prefix[entity]}{i}" for i in range(1, n + 1)], "index": list(range(1, n + 1))}
        write_table(pa.table(rows), out / "vocab" / f"{entity}.parquet", VOCAB)
    item_rows = {
        "item": list(range(1, items + 1)),
        "category": item_cat[1:].tolist(),
        "brand": (np.arange(1, items + 1) % 3 + 1).tolist(),
        "price": rng.uniform(1, 100, size=items).tolist(),
    }
    write_table(pa.table(item_rows), out / "items" / "part-0.parquet", ITEMS)
    user_rows = {"user": list(range(1, users + 1)), "age_bucket": [1] * users, "gender": ["f"] * users}
    write_table(pa.table(user_rows), out / "users" / "part-0.parquet", USERS)
    return out
