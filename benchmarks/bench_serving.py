"""Benchmark: /rank over HTTP with 500 candidates and a 1,000-event history (budget p99 ≤ 10 ms).

Builds a synthetic feature store (bench_features' data) and a serving bundle around an untrained
model of the default config, starts the real service (uvicorn) in its own process, and times
sequential keep-alive requests from this one, feature fetch included. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import socket
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import torch

from benchmarks.bench_features import make_ingest, percentiles
from seqrank.config import FeatureConfig, ModelConfig, ServeConfig

BUDGET_P99_MS = 10.0


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="din")
    parser.add_argument(
        "--seq-len", type=int, default=ModelConfig().seq_len, help="history the model attends"
    )
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--events", type=int, default=1_000, help="behaviors per user in the online store")
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from components import features

    users, items = 500, 20_000
    model_cfg = ModelConfig(name=args.model, seq_len=args.seq_len)
    serve_cfg = ServeConfig(port=_free_port())
    with tempfile.TemporaryDirectory(prefix="seqrank-bench-") as tmp:
        root = Path(tmp)
        ingest = make_ingest(root / "ingest", users, items=items, categories=100, events=args.events)
        features.run(ingest, root / "feast", FeatureConfig(max_sequence_length=args.events))
        sizes = {"user": users + 1, "item": items + 1, "category": 101, "brand": 50}
        bundle = make_bundle(root / "bundle", ingest, root, model_cfg, sizes)

        raw_items = pq.read_table(ingest / "vocab" / "item.parquet").column("raw").to_pylist()
        rng = np.random.default_rng(0)
        payloads = [
            {
                "user_id": f"u{int(rng.integers(1, users + 1))}",
                "candidates": [
                    raw_items[i] for i in rng.choice(len(raw_items), args.candidates, replace=False)
                ],
            }
            for _ in range(args.requests)
        ]

        server = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(bundle, root / "feast", serve_cfg), daemon=True
        )
        server.start()
        try:
            latencies = []
            with httpx.Client(base_url=f"http://{serve_cfg.host}:{serve_cfg.port}", timeout=30) as http:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        http.get("/healthz").raise_for_status()
                        break
                    except httpx.TransportError:
                        if not server.is_alive() or time.monotonic() > deadline:
                            raise SystemExit("the service did not start") from None
                        time.sleep(0.2)
                for payload in payloads[:50]:  # warm-up: allocator, threads, SQLite pages
                    http.post("/rank", json=payload).raise_for_status()
                for payload in payloads:
                    started = time.perf_counter()
                    response = http.post("/rank", json=payload)
                    latencies.append(time.perf_counter() - started)
                    response.raise_for_status()
                assert len(response.json()["items"]) == args.candidates
        finally:
            server.terminate()
            server.join(timeout=10)

    stats = percentiles(latencies)
    result = {
        **stats,
        "budget_p99_ms": BUDGET_P99_MS,
        "p99_over_budget": round(stats["p99_ms"] / BUDGET_P99_MS, 3),
        "mean_ms": round(float(np.mean(latencies) * 1e3), 4),
        "model": args.model,
        "seq_len": args.seq_len,
        "candidates": args.candidates,
        "history_events": args.events,
        "requests": args.requests,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
