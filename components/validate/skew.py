"""Training/serving skew audit: recompute logged serving features offline, as of each request."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

SEQUENCE = {"seq_item": "item", "seq_category": "category", "seq_ts": "ts"}
CATEGORY_SEQUENCE = {"cat_seq_item": "item", "cat_seq_ts": "ts"}


def read_log(log_dir: Path) -> Iterator[dict[str, Any]]:
    """Every logged request under `log_dir` (requests-*.jsonl), in file order."""
    for path in sorted(Path(log_dir).glob("requests-*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def _behaviors(ingest_dir: Path, users: set[int]) -> dict[int, dict[str, np.ndarray]]:
    table = pq.read_table(Path(ingest_dir) / "behaviors", columns=["user", "item", "category", "ts"])
    table = table.filter(pc.is_in(table.column("user"), value_set=pc.cast(list(users), "int64")))
    return {
        row["user"]: {k: np.asarray(row[k], dtype=np.int64) for k in ("item", "category", "ts")}
        for row in table.to_pylist()
    }


def audit(log_dir: Path, ingest_dir: Path, category_k: int, examples: int = 5) -> dict[str, Any]:
    """Mismatch rate per feature between what serving logged and what the offline behaviors give.

    For a request at time t, the offline view of a user's history is the behaviors with ts < t;
    the sequence features are its last `seq_len` (as logged by the service), the category
    sub-sequence its last `category_k` in the logged category.
    """
    requests = list(read_log(log_dir))
    offline = _behaviors(ingest_dir, {int(r["user"]) for r in requests})
    empty = {k: np.zeros(0, dtype=np.int64) for k in ("item", "category", "ts")}
    mismatches = dict.fromkeys([*SEQUENCE, *CATEGORY_SEQUENCE], 0)
    found: list[dict[str, Any]] = []
    for request in requests:
        history = offline.get(int(request["user"]), empty)
        before = int(np.searchsorted(history["ts"], request["ts"], side="left"))
        expected = {name: history[col][:before][-request["seq_len"] :] for name, col in SEQUENCE.items()}
        in_category = history["category"][:before] == request["category"]
        expected |= {
            name: history[col][:before][in_category][-category_k:] for name, col in CATEGORY_SEQUENCE.items()
        }
        served = {**request["features"], **request.get("category_features", {})}
        for name, offline_values in expected.items():
            online_values = np.asarray(served.get(name, []), dtype=np.int64)
            if not np.array_equal(online_values, offline_values):
                mismatches[name] += 1
                if len(found) < examples:
                    found.append(
                        {
                            "user_id": request["user_id"],
                            "ts": request["ts"],
                            "feature": name,
                            "served_len": len(online_values),
                            "offline_len": len(offline_values),
                        }
                    )
    n = len(requests)
    report = {
        "requests": n,
        "mismatch_rate": {name: (count / n if n else 0.0) for name, count in mismatches.items()},
        "mismatches": mismatches,
        "examples": found,
    }
    log.info("skew audit over %d requests: %s", n, report["mismatch_rate"])
    return report
