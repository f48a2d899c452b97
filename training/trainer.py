"""Train CTR models on an ingest output: Adam, BCE on logits, early stopping on GAUC."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from seqrank.config import ModelConfig, TrainConfig
from training import checkpoint
from training.batch import Batch
from training.batching import BatchBuilder, batch_keys
from training.distributed import distributed_context, init_distributed, replica_max_diff, sync_buffers
from training.evaluation import EVAL_BATCH_SIZE, predict_examples, predict_metrics, slice_metrics
from training.ingest_data import IngestData, id_counts
from training.metrics import ctr_metrics
from training.models import CtrModel, ModelSpec, build_model, model_hparams
from training.runtime import (
    autocast,
    configure_threads,
    model_device,
    resolve_device,
    seed_everything,
    to_device,
    tune_allocator,
)
from training.warm_start import warm_start

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What `fit` returns: the model restored to its best validation epoch, and how it got there."""

    model: CtrModel  # best epoch's weights, eval mode, on the training device
    spec: ModelSpec
    history: list[dict[str, float]]  # one entry per epoch: epoch, train_loss, valid_* metrics, timing
    best_epoch: int  # 1-based
    valid: dict[str, float]  # metrics of the best model on the valid split
    test: dict[str, float]  # ... and on the test split
    test_slices: dict[str, dict[str, float]] = field(default_factory=dict)  # slice -> metrics (SLICES)
    test_probs: np.ndarray | None = None  # (N_test,) click probabilities, in the split's order
    world_size: int = 1  # processes that trained it (distributed data parallel when > 1)


def model_spec(data: IngestData, model_cfg: ModelConfig, train_cfg: TrainConfig) -> ModelSpec:
    """The spec `fit` builds: the model config as hparams, plus TrainConfig.embedding_l2 (the weight
    the models' mini-batch aware regularization reads), and the data's vocab sizes."""
    hparams = {**model_hparams(model_cfg), "embedding_l2": train_cfg.embedding_l2}
    return ModelSpec(name=model_cfg.name, hparams=hparams, vocab_sizes=dict(data.vocab_sizes))


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel (one pass per tensor instead of a dozen) on CPU and CUDA."""
    fused = model_device(model).type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused)


def train_step(
    model: CtrModel,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    labels: torch.Tensor,
    device: torch.device,
    forward: Callable[..., Any] | None = None,
    precision: str = "auto",
) -> torch.Tensor:
    """One optimizer step on BCE-with-logits plus the model's regularization and, for the models
    that have one, the auxiliary loss their forward returns beside the logits; returns the BCE
    (detached).

    `forward` replaces `model` for the forward pass (a torch.compile'd wrapper of it); `precision`
    is TrainConfig.precision.
    """
    batch = to_device(batch, device)
    labels = labels.to(device, non_blocking=True)
    run = model if forward is None else forward
    auxiliary = None
    with autocast(device, precision):
        if model.has_auxiliary_loss:
            logits, auxiliary = run(batch, labels)
        else:
            logits = run(batch)
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
    total = loss + model.regularization(batch)
    if auxiliary is not None:
        total = total + auxiliary
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return loss.detach()


def _selection_score(metrics: dict[str, float]) -> float:
    # GAUC is undefined when no user has both a click and a skip (tiny splits); fall back to AUC.
    for name in ("gauc", "auc"):
        if math.isfinite(metrics[name]):
            return metrics[name]
    return -math.inf


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], Callable[[], None]] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:

        def start(epoch: int, total: int) -> Callable[[], None]:
            task = bar.add_task(f"epoch {epoch}", total=total)
            return lambda: bar.advance(task)

        yield start


def fit(
    data: IngestData,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    *,
    progress: bool = False,
    resume: bool = False,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> FitResult:
    """Train `model_cfg.name` on the train split, keep the epoch with the best validation GAUC.

    Args:
        data: the loaded ingest output; needs train, valid and test examples.
        model_cfg: architecture; becomes the spec's hparams.
        train_cfg: epochs, batch size, lr, embedding_l2, device, precision, compile, seed, and
            patience: stop once more than `patience` epochs in a row brought no validation gain.
        on_epoch: called after every epoch with (epoch, metrics): train_loss, valid_auc,
            valid_gauc, valid_logloss, valid_calibration, epoch_seconds, train_samples_per_s.
        progress: show a rich progress bar per epoch.
        resume: continue from the checkpoint in `train_cfg.checkpoint_dir` (training.checkpoint)
            when there is one: same weights, optimizer state, RNGs and history as if never stopped.
        init_state: weights to start from where they fit (`training.warm_start`), e.g. the
            champion's; a checkpoint being resumed wins over them.

    Every epoch writes a checkpoint there when `train_cfg.checkpoint_dir` is set (rank 0 only).

    Returns: the best model (eval mode), its spec, the per-epoch history and best metrics.
    """
    if train_cfg.epochs <= 0:
        raise ValueError(f"train.epochs = {train_cfg.epochs}: must be > 0")
    seed_everything(train_cfg.seed)
    device = resolve_device(train_cfg.device)
    ctx = distributed_context()
    if ctx.enabled:
        device = init_distributed(ctx, device)
    threads = configure_threads()
    if device.type == "cpu":
        tune_allocator()
    train, valid, test = data.split("train"), data.split("valid"), data.split("test")

    spec = model_spec(data, model_cfg, train_cfg)
    model = build_model(spec)
    model.prepare(id_counts(data))
    if init_state is not None:
        warm_start(model, init_state)
    model = model.to(device)
    builder = BatchBuilder(data, model.sequence_lengths(), batch_keys(model))
    optimizer = make_optimizer(model, train_cfg.lr)
    wrapped: nn.Module | None = None
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # Some models leave parameters out of a step (e.g. SIM's soft-search tower in hard mode).
        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    forward = torch.compile(wrapped or model) if train_cfg.compile else wrapped
    rng = np.random.default_rng(train_cfg.seed)  # the same on every rank: one permutation, sharded
    log.info(
        "training %s on %s (%d threads, rank %d of %d): %d train, %d valid, %d test examples",
        spec.name,
        device,
        threads,
        ctx.rank,
        ctx.world_size,
        len(train),
        len(valid),
        len(test),
    )

    state = checkpoint.Progress()
    best_state: dict[str, torch.Tensor] = {}
    checkpoint_dir = train_cfg.checkpoint_dir
    if resume and checkpoint.exists(checkpoint_dir):
        assert checkpoint_dir is not None
        state, best_state = checkpoint.load(checkpoint_dir, model, optimizer, rng)
        log.info("resuming from %s after epoch %d", checkpoint_dir, state.epoch)
    history = state.history
    # Each rank trains on its share of one permutation; equal shares keep the ranks in step.
    per_rank = len(train) // ctx.world_size
    steps_per_epoch = math.ceil(per_rank / train_cfg.batch_size)
    with _progress(progress and ctx.is_main) as bar:
        for epoch in range(state.epoch + 1, train_cfg.epochs + 1):
            if state.stale > train_cfg.patience:
                break  # a resumed run that had already stopped early
            started = time.perf_counter()
            model.train()
            advance = bar(epoch, steps_per_epoch) if bar else None
            loss_sum = torch.zeros((), device=device)
            order = rng.permutation(len(train))[ctx.rank :: ctx.world_size][:per_rank]
            for batch, labels in builder.batches(train.take(order), train_cfg.batch_size):
                loss = train_step(model, optimizer, batch, labels, device, forward, train_cfg.precision)
                loss_sum += loss * len(labels)
                if advance:
                    advance()
            if ctx.enabled:
                sync_buffers(model)  # e.g. Dice's running statistics: one model to evaluate and keep
                dist.all_reduce(loss_sum)
            train_loss = float(loss_sum) / (per_rank * ctx.world_size)
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"epoch {epoch}: training loss is {train_loss}; lower train.lr")
            seconds = time.perf_counter() - started
            valid_metrics = predict_metrics(model, builder, valid)
            metrics = {
                "train_loss": train_loss,
                **{f"valid_{k}": v for k, v in valid_metrics.items() if k != "n"},
                "epoch_seconds": seconds,
                "train_samples_per_s": len(train) / seconds,
            }
            history.append({"epoch": float(epoch), **metrics})
            log.info(
                "epoch %d: train_loss %.4f valid_auc %.4f valid_gauc %.4f (%.1fs)",
                epoch,
                train_loss,
                valid_metrics["auc"],
                valid_metrics["gauc"],
                seconds,
            )
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            score = _selection_score(valid_metrics)
            improved = not best_state or score > state.best_score
            state.epoch = epoch
            if improved:
                state.best_score, state.best_epoch, state.stale = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                state.stale += 1
            if checkpoint_dir is not None and ctx.is_main:
                checkpoint.save(
                    checkpoint_dir, model, optimizer, state, rng, best_state if improved else None
                )
            if state.stale > train_cfg.patience:
                log.info("no validation gain for %d epochs: stopping after epoch %d", state.stale, epoch)
                break

    model.load_state_dict(best_state)
    model.eval()
    if ctx.enabled:
        drift = replica_max_diff(model)
        if drift > 0:
            raise RuntimeError(f"data-parallel replicas disagree after training: max |Δweight| = {drift}")
    best_valid = predict_metrics(model, builder, valid)
    test_probs = predict_examples(model, builder, test, EVAL_BATCH_SIZE)
    best_test = ctr_metrics(test.user, test.label, test_probs)
    log.info("best epoch %d: valid %s, test %s", state.best_epoch, best_valid, best_test)
    return FitResult(
        model,
        spec,
        history,
        state.best_epoch,
        best_valid,
        best_test,
        test_slices=slice_metrics(test, train, test_probs),
        test_probs=test_probs,
        world_size=ctx.world_size,
    )
