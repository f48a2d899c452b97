"""A served model over the tiny feature store: settings, a bundle writer and raw-id lookups shared
by the serving, dense-feature and skew tests (the `serving_env` fixture in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import torch

from seqrank.config import ServeConfig
from tests.helpers.feature_store import CFG, N_CATEGORIES, N_ITEMS, N_USERS, make_ingest_dir

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
