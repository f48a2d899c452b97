"""A served model over the tiny feature store: settings, a bundle writer and raw-id lookups shared
by the serving, dense-feature and skew tests (the `serving_env` fixture in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from seqrank.config import ServeConfig
from tests.helpers.feature_store import CFG, N_CATEGORIES, N_ITEMS, N_USERS, make_ingest_dir
from training.ingest_data import Behaviors

SEQ_LEN = 20
HPARAMS = {"embedding_dim": 8, "seq_len": SEQ_LEN, "attention_hidden": [16, 8], "mlp_hidden": [16, 8]}
VOCAB_SIZES = {"user": N_USERS + 1, "item": N_ITEMS + 1, "category": N_CATEGORIES + 1, "brand": 4}
SERVE_CFG = ServeConfig(max_candidates=50, max_body_bytes=4_000)
TOKEN = "s3cret-token"


def write_bundle(target: Path, ingest_dir: Path, work: Path, name: str, version: str, seed: int) -> Path:
    """A serving bundle exported by the deploy step's own exporter, around a tiny untrained model."""
    from components.deploy.export import export_bundle
    from training.models import ModelSpec, build_model, save_model

    torch.manual_seed(seed)
    model = build_model(ModelSpec(name, hparams=dict(HPARAMS), vocab_sizes=dict(VOCAB_SIZES)))
    model_dir = work / f"model-{name}-{seed}"
    save_model(model, model_dir)
    export_bundle(
        ingest_dir, model_dir, target, {"model_version": version, "run_id": f"run-{seed}", "metrics": {}}
    )
    return target


def raw_ids(ingest_dir: Path, entity: str) -> dict[int, str]:
    """Dense index -> raw id of one entity's vocab."""
    table = pq.read_table(ingest_dir / "vocab" / f"{entity}.parquet")
    return dict(zip(table.column("index").to_pylist(), table.column("raw").to_pylist(), strict=True))


def build_serving_env(root: Path) -> dict[str, Path]:
    """Ingest output, Feast store and a DIN bundle under `root`: what the serving tests run against."""
    from components import features

    ingest_dir = make_ingest_dir(root / "ingest")
    features.run(ingest_dir, root / "feast", CFG)
    bundle = write_bundle(root / "bundle", ingest_dir, root, "din", "seqrank-ranker/1", seed=0)
    return {"root": root, "ingest": ingest_dir, "feast": root / "feast", "bundle": bundle}


def free_port() -> int:
    """A TCP port free on loopback now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def service_process(
    bundle: Path, feast: Path, state_dir: Path, *overrides: str, ready: bool = True, timeout_s: float = 120
) -> Iterator[str]:
    """`seqrank serve` (uvicorn) in a subprocess on a free loopback port; yields its base URL once
    /readyz answers 200 (`ready`) or /healthz does, and stops it on exit."""
    import httpx

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "seqrank.cli",
        "serve",
        "--bundle",
        str(bundle),
        "--feast",
        str(feast),
        "--port",
        str(port),
        "--set",
        f"state_dir={json.dumps(str(state_dir))}",
        *(arg for override in overrides for arg in ("--set", override)),
    ]
    log_path = state_dir / f"service-{port}.log"
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                assert process.poll() is None, f"service exited: {log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"service not up: {log_path.read_text()[-3000:]}"
                try:
                    if httpx.get(f"{base}{'/readyz' if ready else '/healthz'}", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def read_behaviors(ingest_dir: Path) -> Behaviors:
    """The ingest output's behaviors as training holds them (CSR arrays)."""
    table = pq.read_table(ingest_dir / "behaviors", columns=["user", "item", "category", "ts"])
    rows = table.to_pydict()
    lengths = np.array([len(items) for items in rows["item"]])
    columns = {
        name: np.concatenate([np.asarray(v, dtype=np.int64) for v in rows[name]])
        for name in ("item", "category", "ts")
    }
    return Behaviors.from_lists(np.array(rows["user"]), lengths, columns, num_users=N_USERS + 1)
