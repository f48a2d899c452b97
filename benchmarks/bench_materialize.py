"""Benchmark: features-step time and memory for N users with 1,000-event histories (flat memory).

Writes a synthetic ingest output in this process, one file per 5,000 users, so generating 100M
behaviors holds one file's worth. Then runs the features step (tables, Feast apply, online write)
in a child process, so its memory is measured alone: peak RSS, and RSS after chunks spread over
each stage, which stays level when memory does not grow with the number of users. After the run
the child times Feast's own DataFrame ingestion (`write_to_online_store`) on the same batch as
the step's direct proto write, a ratio that holds on a busy machine. Prints one JSON object.

    python -m benchmarks.bench_materialize --users 100000 --events 1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_features import make_ingest, redis_server
from seqrank.config import FeatureConfig

log = logging.getLogger(__name__)

_CHILD = """
import json, resource, sys, time
from pathlib import Path

import pyarrow as pa

from components import features
from components.features import online
from feature_repo import USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR, table_path
from seqrank.config import FeastStoreConfig, FeatureConfig

ingest, feast_dir, events, chunk_users, categories, redis = sys.argv[1:7]
cfg = FeatureConfig(max_sequence_length=int(events), materialize_chunk_users=int(chunk_users))
store_cfg = FeastStoreConfig(online_store="redis", redis_connection=redis) if redis else FeastStoreConfig()

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

chunks = []  # (stage, rows done in the stage, RSS MiB) after every chunk
done = {}
def on_chunk(stage, rows):
    done[stage] = done.get(stage, 0) + rows
    chunks.append((stage, done[stage], round(rss_mib(), 1)))

def server_cpu_s():
    # CPU seconds the Redis server has used so far (INFO cpu): it shares this machine's cores.
    if not redis:
        return 0.0
    import redis as client
    host, port = redis.rsplit(":", 1)
    info = client.Redis(host=host, port=int(port)).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

cpu_started, server_started = time.process_time(), server_cpu_s()
summary = features.run(Path(ingest), Path(feast_dir), cfg, on_chunk, store_cfg=store_cfg)
cpu_s, server_s = time.process_time() - cpu_started, server_cpu_s() - server_started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

from feast import FeatureStore
from feature_repo.bulk import open_bulk
store = FeatureStore(repo_path=feast_dir)
bulk = open_bulk(store)
reference = {}
for view in (USER_BEHAVIOR, USER_CATEGORY_BEHAVIOR):
    batch = next(online.read_bounded(table_path(Path(feast_dir) / "data", view), cfg.materialize_chunk_users))
    frame = pa.Table.from_batches([batch]).to_pandas()
    store.write_to_online_store(view, df=frame)  # warm both paths
    online.write(bulk, view, batch)
    started = time.perf_counter()
    store.write_to_online_store(view, df=frame)
    feast_s = time.perf_counter() - started
    started = time.perf_counter()
    online.write(bulk, view, batch)
    direct_s = time.perf_counter() - started
    reference[view] = {
        "rows": batch.num_rows,
        "feast_write_to_online_store_s": round(feast_s, 3),
        "direct_write_s": round(direct_s, 3),
        "speedup": round(feast_s / direct_s, 2),
    }
# A second run over the same input: the store records what it holds, so it writes nothing.
rerun = features.run(Path(ingest), Path(feast_dir), cfg, store_cfg=store_cfg)
rerun = {"seconds": rerun["seconds"]["total"], "written_users": rerun["written_users"]}
print(json.dumps({"summary": summary, "cpu_s": round(cpu_s, 2), "server_cpu_s": round(server_s, 2), "peak_rss_mib": round(peak, 1), "chunks": chunks,
                  "reference": reference, "rerun": rerun}))
"""


def _spread(chunks: list[list[Any]], points: int) -> dict[str, list[list[float]]]:
    """Per stage, about `points` (rows done, RSS MiB) pairs evenly spread over its chunks, last included."""
    by_stage: dict[str, list[list[float]]] = {}
    for stage, rows, rss in chunks:
        by_stage.setdefault(stage, []).append([rows, rss])
    out = {}
    for stage, series in by_stage.items():
        step = max(1, len(series) // points)
        picked = series[step - 1 :: step]
        if picked[-1] is not series[-1]:
            picked.append(series[-1])
        out[stage] = picked
    return out


def benchmark_materialize(
    users: int,
    events: int = 1_000,
    categories: int = 20,
    chunk_users: int | None = None,
    root: Path | None = None,
    points: int = 10,
    store: str = "sqlite",
) -> dict[str, Any]:
    """Features step over `users` × `events` behaviors: seconds, users/s, peak RSS, RSS per chunk."""
    chunk_users = chunk_users or FeatureConfig().materialize_chunk_users
    with (
        tempfile.TemporaryDirectory(prefix="seqrank-materialize-", dir=root) as tmp,
        contextlib.ExitStack() as stack,
    ):
        redis = stack.enter_context(redis_server(Path(tmp))) if store == "redis" else ""
        started = time.perf_counter()
        ingest = make_ingest(Path(tmp) / "ingest", users, items=20_000, categories=categories, events=events)
        generate_s = time.perf_counter() - started
        generate_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("synthetic ingest: %d users x %d events in %.1f s", users, events, generate_s)
        started = time.perf_counter()
        args = [str(ingest), str(Path(tmp) / "feast"), str(events), str(chunk_users), str(categories), redis]
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, *args], check=True, capture_output=True, text=True
        )
        wall = time.perf_counter() - started
        child = json.loads(out.stdout.strip().splitlines()[-1])
        db = Path(tmp) / "feast" / "online.db"
        online_db = db.stat().st_size if db.exists() else 0
    summary = child["summary"]
    chunks = child["chunks"]
    rss = [c[2] for c in chunks]
    return {
        "users": users,
        "store": store,
        "events_per_user": events,
        "categories": categories,
        "chunk_users": chunk_users,
        "features_step_s": summary["seconds"]["total"],
        "users_per_s": round(users / summary["seconds"]["total"], 1),
        "seconds": summary["seconds"],
        "online_seconds": summary["online_seconds"],
        "child_wall_s": round(wall, 1),
        # CPU of the step's process (all its threads) during the run; a Redis store's server
        # shares this machine's cores, and its CPU during the same run is reported beside it.
        "features_step_cpu_s": child["cpu_s"],
        **({"redis_server_cpu_s": child["server_cpu_s"]} if store == "redis" else {}),
        "rows": summary["rows"],
        "peak_rss_mib": child["peak_rss_mib"],
        "rss_after_chunk_mib": {"first": rss[0], "min": min(rss), "max": max(rss), "last": rss[-1]},
        "rss_by_stage": _spread(chunks, points),
        "online_write_vs_feast_ingestion": child["reference"],
        "online_db_mib": round(online_db / 2**20, 1),
        "unchanged_rerun": child["rerun"],
        "generate_s": round(generate_s, 1),
        "generate_peak_rss_mib": round(generate_peak, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000)
    parser.add_argument("--categories", type=int, default=20)
    parser.add_argument(
        "--chunk-users", type=int, help="FeatureConfig.materialize_chunk_users (default: the config default)"
    )
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite", help="online store")
    parser.add_argument("--points", type=int, default=10, help="RSS samples reported per stage")
    parser.add_argument(
        "--tmp", type=Path, help="where the synthetic data goes (default: the system temp dir)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    result = benchmark_materialize(
        args.users, args.events, args.categories, args.chunk_users, args.tmp, args.points, args.store
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
