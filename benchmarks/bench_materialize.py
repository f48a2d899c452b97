"""Benchmark: features-step time and peak memory for N users with 1,000-event histories.

Builds a synthetic ingest output in this process (written in user chunks), then runs the features
step in a child process so its peak RSS is measured alone. Prints one JSON object.

    python -m benchmarks.bench_materialize --users 100000 --events 1000
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_features import make_ingest

log = logging.getLogger(__name__)

_CHILD = """
import json, sys
from pathlib import Path
from components import features
from seqrank.config import FeatureConfig
cfg = FeatureConfig(max_sequence_length=int(sys.argv[3]), materialize_chunk_users=int(sys.argv[4]))
print(json.dumps(features.run(Path(sys.argv[1]), Path(sys.argv[2]), cfg)))
"""


def benchmark_materialize(
    users: int, events: int = 1_000, categories: int = 20, chunk_users: int = 50_000, root: Path | None = None
) -> dict:
    """Features step (tables, apply, online write) over `users` × `events` behaviors; seconds and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="seqrank-materialize-", dir=root) as tmp:
        started = time.perf_counter()
        ingest = make_ingest(Path(tmp) / "ingest", users, items=20_000, categories=categories, events=events)
        built = time.perf_counter() - started
        log.info("synthetic ingest: %d users x %d events in %.1f s", users, events, built)
        started = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                str(ingest),
                str(Path(tmp) / "feast"),
                str(events),
                str(chunk_users),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        online_db = (Path(tmp) / "feast" / "online.db").stat().st_size
    # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN covers only the features-step child.
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "users": users,
        "events_per_user": events,
        "categories": categories,
        "chunk_users": chunk_users,
        "features_step_wall_s": round(wall, 1),
        "seconds": summary["seconds"],
        "rows": summary["rows"],
        "peak_rss_mib": round(peak_mib, 1),
        "online_db_mib": round(online_db / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000)
    parser.add_argument("--categories", type=int, default=20)
    parser.add_argument("--chunk-users", type=int, default=50_000)
    parser.add_argument(
        "--tmp", type=Path, help="where the synthetic data goes (default: the system temp dir)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    result = benchmark_materialize(args.users, args.events, args.categories, args.chunk_users, args.tmp)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
