"""Benchmark: POST /v1/rank over HTTP, feature fetch included (budgets: p99 ≤ 10 ms at 1 client;
SIM ≥ 150 requests/s at p99 ≤ 25 ms with 4).

Builds a synthetic feature store (bench_features' data: every user has `--history` behaviors in
100 categories) and a serving bundle around an untrained model of the default config (the
model's real shapes), starts the real service (uvicorn, `serving.app.serve`) in its own process
on loopback, waits for /readyz, and times keep-alive requests from `--concurrency` client threads
for `--seconds`. Prints one JSON object: latency percentiles, requests/s, errors, and the time
split from the response's server timing (features, model) and the rest (HTTP: parsing,
encoding, the network stack and the client).

    seqrank bench serve --model sim --candidates 500 --history 1000 --concurrency 4 --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import multiprocessing
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from benchmarks.bench_features import make_ingest
from seqrank.config import FeatureConfig, ModelConfig, ServeConfig
from serving.runtime import Runtime

BUDGET_P99_MS = 10.0
BUDGET_CONCURRENT = {"concurrency": 4, "rps": 150.0, "p99_ms": 25.0}
USERS, ITEMS, CATEGORIES = 500, 20_000, 100
WARMUP_REQUESTS = 100

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_bundle(
    target: Path, ingest: Path, work: Path, model_cfg: ModelConfig, sizes: dict[str, int]
) -> Path:
    from components.deploy.export import export_bundle
    from training.models import ModelSpec, build_model, model_hparams, save_model

    torch.manual_seed(0)
    model = build_model(ModelSpec(model_cfg.name, hparams=model_hparams(model_cfg), vocab_sizes=sizes))
    save_model(model, work / "model")
    export_bundle(
        ingest, work / "model", target, {"model_version": "bench/1", "run_id": "bench", "metrics": {}}
    )
    return target


def _serve(bundle: Path, feast: Path, cfg: ServeConfig) -> None:
    from serving.app import serve

    logging.basicConfig(level=logging.WARNING)
    serve(bundle, feast, cfg)


def _wait_ready(host: str, port: int, server: Any, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection = http.client.HTTPConnection(host, port, timeout=5)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if not server.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the service did not become ready")
        time.sleep(0.2)


class _Client(threading.Thread):
    """One keep-alive connection posting payloads back to back until `deadline`."""

    def __init__(self, host: str, port: int, payloads: list[bytes], deadline: float, offset: int) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.payloads, self.deadline, self.offset = (
            host,
            port,
            payloads,
            deadline,
            offset,
        )
        self.latencies: list[float] = []
        self.server_ms: list[tuple[float, float, float]] = []
        self.errors = 0
        self.degraded = 0

    def run(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Content-Type": "application/json"}
        n = self.offset
        while time.perf_counter() < self.deadline:
            body = self.payloads[n % len(self.payloads)]
            n += 1
            started = time.perf_counter()
            try:
                connection.request("POST", "/v1/rank", body, headers)
                response = connection.getresponse()
                data = response.read()
            except OSError:
                self.errors += 1
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                continue
            self.latencies.append(time.perf_counter() - started)
            if response.status != 200:
                self.errors += 1
                continue
            answer = json.loads(data)
            self.degraded += answer["degraded"]
            timing = answer["timing"]
            self.server_ms.append((timing["features_ms"], timing["model_ms"], timing["total_ms"]))
        connection.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` and its descendants (the --workers processes) so far."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _load(
    host: str, port: int, payloads: list[bytes], concurrency: int, seconds: float, server_pid: int
) -> dict[str, Any]:
    cpu_before = _cpu_seconds(server_pid)
    deadline = time.perf_counter() + seconds
    step = max(1, len(payloads) // concurrency)
    clients = [_Client(host, port, payloads, deadline, i * step) for i in range(concurrency)]
    started = time.perf_counter()
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    elapsed = time.perf_counter() - started
    server_cpu = _cpu_seconds(server_pid) - cpu_before
    latencies = np.array([s for c in clients for s in c.latencies]) * 1e3
    server = np.array([t for c in clients for t in c.server_ms]).reshape(-1, 3)
    errors = sum(c.errors for c in clients)
    total = server[:, 2] if len(server) else np.zeros(1)
    http_ms = latencies[: len(total)] - total if len(server) == len(latencies) else np.zeros(1)
    return {
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p95_ms": round(float(np.percentile(latencies, 95)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "mean_ms": round(float(latencies.mean()), 3),
        "rps": round(len(latencies) / elapsed, 1),
        "requests": len(latencies),
        "errors": errors,
        "degraded": sum(c.degraded for c in clients),
        # CPU the service spent per answered request: on a shared machine this moves less than the
        # latencies, and cores / (it + the client's share) bounds the requests/s.
        "server_cpu_ms_per_request": round(server_cpu * 1e3 / max(1, len(latencies)), 3),
        # Medians of the server's own timing, and what the client saw beyond the server's total.
        "split_ms": {
            "features": round(float(np.median(server[:, 0])), 3) if len(server) else None,
            "model": round(float(np.median(server[:, 1])), 3) if len(server) else None,
            "server_total": round(float(np.median(total)), 3),
            "http_and_client": round(float(np.median(http_ms)), 3),
        },
        # The same at the 99th percentile: where the tail of the client's latency comes from.
        "split_p99_ms": {
            "features": round(float(np.percentile(server[:, 0], 99)), 3) if len(server) else None,
            "model": round(float(np.percentile(server[:, 1], 99)), 3) if len(server) else None,
            "server_total": round(float(np.percentile(total, 99)), 3),
            "http_and_client": round(float(np.percentile(http_ms, 99)), 3),
        },
    }


def benchmark_serving(
    model: str = "din",
    candidates: int = 500,
    history: int = 1_000,
    concurrency: int = 1,
    seconds: float = 10.0,
    workers: int = 1,
    torch_threads: int = 1,
    unit_cores: int | None = None,
    runtime: Runtime = "onnxruntime",
    seq_len: int | None = None,
    sweep: list[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Serve `model` over a generated store and time it; with `sweep`, one run per (candidates,
    concurrency) pair on the same running service (keys "runs")."""
    from components import features

    model_cfg = ModelConfig(name=model) if seq_len is None else ModelConfig(name=model, seq_len=seq_len)
    serve_cfg = ServeConfig(
        port=_free_port(),
        workers=workers,
        torch_threads=torch_threads,
        unit_cores=unit_cores,
        runtime=runtime,
        max_candidates=max(2_000, candidates),
    )
    plan = sweep or [(candidates, concurrency)]
    with tempfile.TemporaryDirectory(prefix="seqrank-bench-") as tmp:
        root = Path(tmp)
        ingest = make_ingest(root / "ingest", USERS, items=ITEMS, categories=CATEGORIES, events=history)
        features.run(ingest, root / "feast", FeatureConfig(max_sequence_length=history))
        sizes = {"user": USERS + 1, "item": ITEMS + 1, "category": CATEGORIES + 1, "brand": 50}
        bundle = make_bundle(root / "bundle", ingest, root, model_cfg, sizes)

        raw_items = pq.read_table(ingest / "vocab" / "item.parquet").column("raw").to_pylist()
        rng = np.random.default_rng(0)

        def payloads(n_candidates: int) -> list[bytes]:
            return [
                json.dumps(
                    {
                        "user_id": f"u{int(rng.integers(1, USERS + 1))}",
                        "candidates": [
                            raw_items[i] for i in rng.choice(len(raw_items), n_candidates, replace=False)
                        ],
                    }
                ).encode()
                for _ in range(300)
            ]

        server = multiprocessing.get_context("spawn").Process(
            # Not daemonic: with --workers the service's supervisor starts processes of its own.
            target=_serve,
            args=(bundle, root / "feast", serve_cfg),
        )
        server.start()
        pid = server.pid
        assert pid is not None  # started
        runs = []
        try:
            _wait_ready(serve_cfg.host, serve_cfg.port, server)
            for n_candidates, n_clients in plan:
                bodies = payloads(n_candidates)
                # Warm-up: allocator, threads, SQLite pages; one client per worker at least.
                _load(serve_cfg.host, serve_cfg.port, bodies[:WARMUP_REQUESTS], max(1, workers), 1.0, pid)
                result = _load(serve_cfg.host, serve_cfg.port, bodies, n_clients, seconds, pid)
                runs.append({"candidates": n_candidates, "concurrency": n_clients, **result})
        finally:
            server.terminate()
            server.join(timeout=10)

    setting = {
        "model": model,
        "seq_len": model_cfg.seq_len,
        "history_events": history,
        "workers": workers,
        "torch_threads": torch_threads,
        "unit_cores": serve_cfg.unit_cores,
        "runtime": runtime,
        "seconds": seconds,
        "budget_p99_ms": BUDGET_P99_MS,
        "budget_concurrent": BUDGET_CONCURRENT,
    }
    if sweep:
        return {**setting, "runs": runs}
    [run] = runs
    return {**run, **setting, "p99_over_budget": round(run["p99_ms"] / BUDGET_P99_MS, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="din")
    parser.add_argument("--seq-len", type=int, help="history the model attends (default: the config's)")
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--history", type=int, default=1_000, help="behaviors per user in the online store")
    parser.add_argument("--concurrency", type=int, default=1, help="client threads, each one connection")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed load per run")
    parser.add_argument("--workers", type=int, default=1, help="service processes")
    parser.add_argument("--torch-threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument(
        "--unit-cores", type=int, default=None, help="serve.unit_cores (default: cores / workers)"
    )
    parser.add_argument(
        "--runtime", choices=["onnxruntime", "torch"], default="onnxruntime", help="serve.runtime"
    )
    parser.add_argument(
        "--sweep",
        nargs="*",
        metavar="CANDIDATES:CONCURRENCY",
        help="several runs on one service, e.g. 100:1 500:1 1000:1 500:2 500:4 500:8",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sweep = [tuple(int(x) for x in item.split(":")) for item in args.sweep] if args.sweep else None
    result = benchmark_serving(
        model=args.model,
        candidates=args.candidates,
        history=args.history,
        concurrency=args.concurrency,
        seconds=args.seconds,
        workers=args.workers,
        torch_threads=args.torch_threads,
        unit_cores=args.unit_cores,
        runtime=args.runtime,
        seq_len=args.seq_len,
        sweep=sweep,  # type: ignore[arg-type]
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
