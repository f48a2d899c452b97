"""The train step's logic: fit one model, log params, curves, metrics and the model to MLflow."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from components import tracking
from seqrank.config import PipelineConfig
from seqrank.paths import StatePaths
from seqrank.storage import file_fingerprint

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
# MLflow rejects longer param values; a long input file list is cut rather than failing the run.
MAX_PARAM_CHARS = 6000
_BATCH = 100  # MLflow's limit of params or metrics per log_batch call


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → {"section.field": str(value)}; lists as JSON so they read back unambiguously."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            flat[name] = text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."
    return flat


def learning_curve(history: list[dict[str, float]], best_epoch: int, target: Path) -> Path:
    """Plot losses and validation AUC/GAUC per epoch into a PNG (Agg backend, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(figure)
    losses, ranking = figure.subplots(1, 2)
    losses.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    losses.plot(epochs, [h["valid_logloss"] for h in history], marker="o", label="valid logloss")
    losses.set_xlabel("epoch")
    losses.set_title("loss")
    losses.legend()
    ranking.plot(epochs, [h["valid_auc"] for h in history], marker="o", label="valid AUC")
    ranking.plot(epochs, [h["valid_gauc"] for h in history], marker="o", label="valid GAUC")
    ranking.axvline(best_epoch, color="grey", linestyle="--", label="best epoch")
    ranking.set_xlabel("epoch")
    ranking.set_title("ranking")
    ranking.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    return target


def calibration_plot(labels: np.ndarray, probs: np.ndarray, target: Path, bins: int = 10) -> Path:
    """Reliability diagram: observed CTR against mean predicted CTR in equal-count score bins."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    order = np.argsort(probs, kind="stable")
    groups = [g for g in np.array_split(order, bins) if len(g)]
    predicted = [float(probs[g].mean()) for g in groups]
    observed = [float(labels[g].mean()) for g in groups]
    figure = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    top = max(predicted + observed + [1e-3]) * 1.05
    axes.plot([0, top], [0, top], color="grey", linestyle="--", label="calibrated")
    axes.plot(predicted, observed, marker="o", label="model")
    axes.set_xlabel("mean predicted CTR")
    axes.set_ylabel("observed CTR")
    axes.set_title(f"calibration (test, {bins} equal-count bins)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    return target


def slice_plot(slices: dict[str, dict[str, float]], overall: dict[str, float], target: Path) -> Path:
    """Test AUC and GAUC per slice beside the overall value, with each slice's impression count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = ["all", *slices]
    rows = [overall, *slices.values()]
    x = np.arange(len(names))
    figure = Figure(figsize=(8, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for shift, metric in ((-0.2, "auc"), (0.2, "gauc")):
        values = [r.get(metric, float("nan")) for r in rows]
        axes.bar(x + shift, np.nan_to_num(values, nan=0.0), width=0.4, label=metric.upper())
    axes.set_xticks(x, [f"{n}\nn={int(r.get('n', 0))}" for n, r in zip(names, rows, strict=True)])
    axes.set_ylim(0.4, 1.0)
    axes.axhline(0.5, color="grey", linewidth=0.8)
    axes.set_title("test AUC by slice")
    axes.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    return target


def champion_state(paths: StatePaths, cfg: PipelineConfig) -> tuple[dict[str, Any] | None, str | None]:
    """The champion's weights to warm-start from, and its version, when `train.warm_start` asks.

    Only a champion of the same model with full (unhashed) embeddings qualifies: hashed tables
    map ids to rows by frequency, which changes from run to run. Otherwise (None, None): from scratch.
    """
    if cfg.train.warm_start == "off":
        return None, None
    from safetensors.torch import load_file

    from training.models import SPEC_FILE, WEIGHTS_FILE, ModelSpec

    version = tracking.champion_version(paths, cfg.train.registered_model)
    if version is None:
        log.info("warm start: no champion yet; training from scratch")
        return None, None
    model_dir = tracking.download(version.source)
    spec = ModelSpec.from_dict(json.loads((model_dir / SPEC_FILE).read_text()))
    if (
        spec.name != cfg.model.name
        or cfg.model.embedding != "full"
        or spec.hparams.get("embedding") != "full"
    ):
        log.info(
            "warm start: champion %s is %s (embedding %s); training %s from scratch",
            version.version,
            spec.name,
            spec.hparams.get("embedding"),
            cfg.model.name,
        )
        return None, None
    return load_file(str(model_dir / WEIGHTS_FILE)), f"{cfg.train.registered_model}/{version.version}"


def run(
    ingest_dir: Path,
    cfg: PipelineConfig,
    *,
    tags: dict[str, str] | None = None,
    progress: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Train `cfg.model` on `ingest_dir` as one MLflow run in `cfg.train.experiment`.

    The run holds the flattened config as params, per-epoch metrics (train_loss, valid_auc,
    valid_gauc, valid_logloss, valid_calibration, ...), the best model's best_valid_* and test_*
    metrics, tags (data_manifest_sha256, model_name and `tags`), plots/learning_curve.png and the
    model as `model/` (model.safetensors + model.json, never a pickle). Registering the model is
    left to the gate and deploy steps.

    Under torchrun (WORLD_SIZE > 1) every process trains its shard of the data in step; only rank
    0 records the MLflow run, the others return {"rank": r, "metrics": ...} with no run.

    Returns: {"run_id", "model_uri" (artifact URI of model/), "metrics", "model_name"}.
    """
    from mlflow.entities import Metric, Param, RunStatus

    from training.distributed import distributed_context
    from training.ingest_data import load_ingest
    from training.models import save_model
    from training.trainer import fit

    ingest_dir = Path(ingest_dir)
    manifest = ingest_dir / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(f"no manifest.json in {ingest_dir}: the run could not name the data it used")
    data = load_ingest(ingest_dir)
    ctx = distributed_context()
    if not ctx.is_main:
        replica = fit(data, cfg.model, cfg.train, resume=resume)
        return {"rank": ctx.rank, "metrics": {f"test_{k}": v for k, v in replica.test.items()}}

    paths = StatePaths.of(cfg)
    client = tracking.client(paths)
    experiment_id = tracking.experiment_id(paths, cfg.train.experiment)
    init_state, warm_from = champion_state(paths, cfg)
    run_tags = {
        "model_name": cfg.model.name,
        "data_manifest_sha256": file_fingerprint(manifest),
        "seqrank.step": "train",
        "warm_start_from": warm_from or "none",
        **(tags or {}),
    }
    mlflow_run = client.create_run(
        experiment_id, run_name=f"{cfg.model.name}-{uuid.uuid4().hex[:8]}", tags=run_tags
    )
    run_id = mlflow_run.info.run_id
    log.info("MLflow run %s (%s) in experiment %s", run_id, mlflow_run.info.run_name, cfg.train.experiment)

    def log_metrics(values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        for start in range(0, len(metrics), _BATCH):
            client.log_batch(run_id, metrics=metrics[start : start + _BATCH])

    try:
        params = [Param(key, value) for key, value in flatten(cfg.to_dict()).items()]
        for start in range(0, len(params), _BATCH):
            client.log_batch(run_id, params=params[start : start + _BATCH])

        result = fit(
            data,
            cfg.model,
            cfg.train,
            on_epoch=lambda epoch, metrics: log_metrics(metrics, epoch),
            progress=progress,
            resume=resume,
            init_state=init_state,
        )

        final = {
            "best_epoch": float(result.best_epoch),
            "world_size": float(result.world_size),
            **{f"best_valid_{k}": v for k, v in result.valid.items()},
            **{f"test_{k}": v for k, v in result.test.items()},
            **{
                f"test_{name}_{k}": v
                for name, metrics in result.test_slices.items()
                for k, v in metrics.items()
                if math.isfinite(v)
            },
        }
        log_metrics(final, result.best_epoch)
        with tempfile.TemporaryDirectory(prefix="seqrank-train-") as tmp:
            work = Path(tmp)
            save_model(result.model, work / MODEL_ARTIFACT)
            client.log_artifacts(run_id, str(work / MODEL_ARTIFACT), MODEL_ARTIFACT)
            plots = [
                learning_curve(result.history, result.best_epoch, work / "learning_curve.png"),
                slice_plot(result.test_slices, result.test, work / "auc_by_slice.png"),
            ]
            if result.test_probs is not None:
                test = data.split("test")
                plots.append(calibration_plot(test.label, result.test_probs, work / "calibration.png"))
            for plot in plots:
                client.log_artifact(run_id, str(plot), "plots")
            client.log_artifact(run_id, str(manifest), "data")
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))

    model_uri = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    log.info("run %s: test_auc %.4f test_gauc %.4f", run_id, final["test_auc"], final["test_gauc"])
    return {"run_id": run_id, "model_uri": model_uri, "metrics": final, "model_name": cfg.model.name}
