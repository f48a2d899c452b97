"""The deploy step: register the promoted model, export its serving bundle, move the champion alias."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from components import tracking
from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths
from seqrank.storage import atomic_dir, write_json

log = logging.getLogger(__name__)


def kserve_manifest(cfg: PipelineConfig, model_version: str, storage_uri: str) -> dict[str, Any]:
    """A KServe InferenceService running the seqrank image's service over the exported bundle."""
    name = cfg.train.registered_model
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {"seqrank/model-version": model_version}},
        "spec": {
            "predictor": {
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "seqrank:latest",
                        "args": ["serve", "--bundle", "/mnt/models", "--host", "0.0.0.0", "--port", "8080"],
                        "env": [{"name": "STORAGE_URI", "value": storage_uri}],
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    }
                ]
            }
        },
    }


def export_bundle(data_dir: Path, model_dir: Path, target: Path, meta: dict[str, Any]) -> None:
    """Write the serving bundle (model, vocab, item table, metadata) to `target` in one rename."""
    with atomic_dir(target) as tmp:
        shutil.copytree(model_dir, tmp / "model")
        shutil.copytree(Path(data_dir) / "vocab", tmp / "vocab")
        items_src = Path(data_dir) / "items"
        items_files = sorted(items_src.glob("*.parquet")) if items_src.is_dir() else [items_src]
        pq.write_table(pa.concat_tables([pq.read_table(f) for f in items_files]), tmp / "items.parquet")
        write_json(tmp / "bundle.json", meta)


def run(
    data_dir: Path,
    run_id: str,
    cfg: PipelineConfig,
    gate_report: dict[str, Any],
    store: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register `run_id`'s model, export it as the champion bundle, then point the alias at it.

    `store` is the features step's reference to the Feast store the bundle's ids agree with; the
    bundle records it so the service reads the same one.
    """
    paths = StatePaths.of(cfg)
    client = tracking.client(paths)
    from mlflow.exceptions import MlflowException

    name = cfg.train.registered_model
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="seqrank ranking model; alias champion is served")
    source = tracking.run_model_uri(paths, run_id)
    version = client.create_model_version(
        name, source=source, run_id=run_id, tags={"gate_reason": gate_report.get("reason", "")}
    )
    model_version = f"{name}/{version.version}"
    meta = {
        "model_version": model_version,
        "run_id": run_id,
        "metrics": gate_report.get("challenger_metrics", {}),
        "feature_store": store or {"feast_dir": str(paths.feast), "project": cfg.features.project},
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    export_bundle(data_dir, tracking.download(source), paths.champion_bundle, meta)
    manifest = kserve_manifest(cfg, model_version, storage_uri=paths.champion_bundle.as_uri())
    (paths.serving / "kserve.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    # The alias moves last, so it never names a model whose bundle failed to export.
    client.set_registered_model_alias(name, tracking.CHAMPION_ALIAS, version.version)
    log.info("deployed %s from run %s to %s", model_version, run_id, paths.champion_bundle)
    return {"model_version": model_version, "bundle": str(paths.champion_bundle), "run_id": run_id}
