"""Measure the log generator end to end (simulate + write every file); print one JSON object.

By default it generates about 1M events: the default config with 3,000 users. The figure to watch
is `seconds` (wall time of `simulator.generate`, best of `--repeat` runs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from seqrank.config import load_config
from simulator import generate


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=3_000, help="simulated users (3,000: about 1M events)")
    parser.add_argument("--days", type=int, help="days of logs (default: the config's)")
    parser.add_argument("--seed", type=int, help="random seed (default: the config's)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the fastest one is reported")
    parser.add_argument("--out", type=Path, help="output directory (default: a temporary one)")
    args = parser.parse_args(argv)

    overrides = [f"generator.users={args.users}"]
    overrides += [f"generator.days={args.days}"] if args.days is not None else []
    overrides += [f"generator.seed={args.seed}"] if args.seed is not None else []
    cfg = load_config(overrides=overrides).generator

    best = float("inf")
    summary: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as scratch:
        out = args.out or Path(scratch) / "raw"
        for _ in range(max(args.repeat, 1)):
            start = time.perf_counter()
            summary = generate(cfg, out)
            best = min(best, time.perf_counter() - start)
        sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    result = {
        "events": summary["events"],
        "impressions": summary["counts"]["impression"],
        "users": cfg.users,
        "days": cfg.days,
        "seconds": round(best, 3),
        "events_per_s": round(summary["events"] / best),
        "bytes": sizes,
        "oracle_auc": summary["oracle_auc"],
        "oracle_last50_auc": summary["oracle_last50_auc"],
        "oracle_revealed_auc": summary["oracle_revealed_auc"],
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
