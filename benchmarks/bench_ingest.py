"""Benchmark: Beam ingest throughput on synthetic raw logs (budget ≥ 100,000 events/s, DESIGN §6).

Writes N raw events (ranking requests of `slate` impressions, some clicked, some clicks followed by
a cart or buy) as JSONL, CSV or Parquet with a numpy-based writer, times `components.ingest.run`
on them and prints one JSON object: {"events", "seconds", "events_per_s", "peak_rss_mb", ...}.
The events are generated in a child process, so that `peak_rss_mb` (the benchmark process's peak
resident memory) is what ingest needed, not what the generator did.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from components.ingest import run
from seqrank.config import IngestConfig

BUDGET_EVENTS_PER_S = 100_000
START_MS = 1_767_225_600_000  # 2026-01-01


def make_events(n: int, users: int, items: int, categories: int, slate: int, seed: int = 0) -> pd.DataFrame:
    """About `n` raw events in the contract's columns, roughly time-ordered per request."""
    rng = np.random.default_rng(seed)
    # Clicks and their carts/buys add ~14% to the impressions; the latest extra events are cut off.
    requests = max(1, int(np.ceil(n / slate)))
    req_user = rng.integers(0, users, requests)
    req_ts = np.sort(rng.integers(START_MS, START_MS + 30 * 86_400_000, requests))
    req = np.repeat(np.arange(requests), slate)
    position = np.tile(np.arange(slate), requests)
    item = rng.integers(0, items, len(req))
    frames = [
        pd.DataFrame(
            {
                "ts": req_ts[req] + position * 50,
                "user": req_user[req],
                "item": item,
                "event_type": "impression",
                "req": req,
                "position": position,
            }
        )
    ]
    clicked = np.flatnonzero(rng.random(len(req)) < 0.12)
    frames.append(
        pd.DataFrame(
            {
                "ts": req_ts[req[clicked]] + rng.integers(1_000, 120_000, len(clicked)),
                "user": req_user[req[clicked]],
                "item": item[clicked],
                "event_type": "click",
                "req": req[clicked],
                "position": -1,
            }
        )
    )
    bought = clicked[rng.random(len(clicked)) < 0.15]
    frames.append(
        pd.DataFrame(
            {
                "ts": req_ts[req[bought]] + rng.integers(120_000, 600_000, len(bought)),
                "user": req_user[req[bought]],
                "item": item[bought],
                "event_type": rng.choice(["cart", "fav", "buy"], len(bought)),
                "req": -1,
                "position": -1,
            }
        )
    )
    events = (
        pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable").iloc[:n].reset_index(drop=True)
    )
    category = (events["item"].to_numpy() * 7919) % categories
    return pd.DataFrame(
        {
            "ts": events["ts"].to_numpy(np.int64),
            "user_id": "u" + events["user"].astype(str),
            "item_id": "i" + events["item"].astype(str),
            "event_type": events["event_type"],
            "event_id": "e" + pd.Series(np.arange(len(events))).astype(str),
            "request_id": ("r" + events["req"].astype(str)).where(events["req"] >= 0),
            "position": events["position"].where(events["position"] >= 0).astype("Int32"),
            "category_id": "c" + pd.Series(category).astype(str),
        }
    )


def write_events(events: pd.DataFrame, root: Path, fmt: str) -> Path:
    path = root / f"events.{fmt}"
    if fmt == "jsonl":
        events.to_json(path, orient="records", lines=True)
    elif fmt == "csv":
        events.to_csv(path, index=False)
    else:
        events.to_parquet(path, index=False, row_group_size=250_000)
    return path


def _generate(events: int, users: int, items: int, categories: int, slate: int, root: str, fmt: str) -> str:
    return str(write_events(make_events(events, users, items, categories, slate), Path(root), fmt))


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 2**10, 1)


def benchmark_ingest(
    events: int,
    fmt: str = "jsonl",
    *,
    users: int = 20_000,
    items: int = 50_000,
    categories: int = 200,
    slate: int = 10,
    runner_options: list[str] | None = None,
) -> dict:
    """Generate `events` raw events as `fmt`, ingest them and report events/s (writing excluded)."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        # A fresh interpreter, not a fork: this process already runs Arrow's and Beam's threads.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            path = Path(pool.apply(_generate, (events, users, items, categories, slate, tmp, fmt)))
        input_mb = round(path.stat().st_size / 2**20, 1)
        cfg = IngestConfig(runner_options=list(runner_options or []))
        started = time.perf_counter()
        manifest = run([str(path)], root / "out", cfg)
        seconds = time.perf_counter() - started
    return {
        "events": manifest["read"],
        "seconds": round(seconds, 3),
        "events_per_s": round(manifest["read"] / seconds, 1),
        "format": fmt,
        "input_mb": input_mb,
        "examples": manifest["examples"],
        "label_rate": round(manifest["label_rate"], 4),
        "budget_events_per_s": BUDGET_EVENTS_PER_S,
        "ratio_to_budget": round(manifest["read"] / seconds / BUDGET_EVENTS_PER_S, 3),
        "peak_rss_mb": _peak_rss_mb(),
        "runner_options": list(runner_options or []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--categories", type=int, default=200)
    parser.add_argument("--slate", type=int, default=10)
    parser.add_argument("--format", choices=("jsonl", "csv", "parquet"), default="jsonl")
    parser.add_argument(
        "--runner-option",
        action="append",
        default=[],
        help="extra Beam option, e.g. --runner-option=--direct_num_workers=2 (repeatable)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = benchmark_ingest(
        args.events,
        args.format,
        users=args.users,
        items=args.items,
        categories=args.categories,
        slate=args.slate,
        runner_options=args.runner_option,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
