"""Train and evaluate CTR models on an ingest output: Adam, BCE on logits, early stopping on GAUC."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from seqrank.config import ModelConfig, TrainConfig
from training import checkpoint
from training.data import BATCH_KEYS, BatchBuilder, Examples, IngestData, id_counts
from training.metrics import ctr_metrics
from training.models import CtrModel, ModelSpec, build_model

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 4096
Batch = dict[str, torch.Tensor]


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


# Test slices reported beside the overall metrics, as (description, rule). "Train impressions" count
# the user's examples in the train split; "behaviors" those before the impression (hist_end).
SHORT_HISTORY, LONG_HISTORY, HEAVY_SHARE = 10, 100, 0.10
SLICES = {
    "new_users": "users with no train impressions",
    "heavy_users": f"the {HEAVY_SHARE:.0%} of users with the most train impressions",
    "short_history": f"fewer than {SHORT_HISTORY} behaviors before the impression",
    "long_history": f"at least {LONG_HISTORY} behaviors before the impression",
}


def slice_masks(examples: Examples, train: Examples) -> dict[str, np.ndarray]:
    """Boolean masks over `examples`, one per SLICES entry."""
    size = int(max(examples.user.max(initial=0), train.user.max(initial=0))) + 1
    per_user = np.bincount(train.user, minlength=size)
    active = per_user[per_user > 0]
    heavy_from = np.quantile(active, 1 - HEAVY_SHARE) if len(active) else np.inf
    seen = per_user[examples.user]
    return {
        "new_users": seen == 0,
        "heavy_users": (seen > 0) & (seen >= heavy_from),
        "short_history": examples.hist_end < SHORT_HISTORY,
        "long_history": examples.hist_end >= LONG_HISTORY,
    }


def slice_metrics(examples: Examples, train: Examples, probs: np.ndarray) -> dict[str, dict[str, float]]:
    """ctr_metrics per slice of `examples` (SLICES); a slice with no examples gets n = 0 and NaNs."""
    return {
        name: ctr_metrics(examples.user[mask], examples.label[mask], probs[mask])
        for name, mask in slice_masks(examples, train).items()
    }


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (or the single-process default)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context() -> Distributed:
    """Where torchrun put this process: RANK, WORLD_SIZE, LOCAL_RANK from the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def _init_distributed(ctx: Distributed, device: torch.device) -> torch.device:
    # gloo on CPU, nccl on CUDA (one GPU per local rank); torchrun provides MASTER_ADDR/PORT.
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics differ per shard)."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def _replica_max_diff(model: nn.Module) -> float:
    """Largest |value − rank 0's value| over all parameters and float buffers: 0 when the replicas agree."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device = 'cuda' but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


def configure_threads() -> int:
    """Cap torch's intra-op threads at the CPUs this process may use (containers often allow fewer
    than the host has, and oversubscribed threads are slower than fewer)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.get_num_threads() > available:
        torch.set_num_threads(available)
    return torch.get_num_threads()


def tune_allocator() -> bool:
    """Make glibc keep freed memory in the process instead of returning it to the kernel.

    Every training step allocates and frees the same ~30 MB activation buffers (B·L × hidden);
    with glibc's defaults they are unmapped on free and page-faulted back in on the next step,
    about 10,000 faults per step at B=1024, L=100, costing 10-15% of CPU training throughput.
    Raises the mmap threshold to its maximum (32 MiB) and the trim threshold to 1 GiB. Affects
    the whole process; a no-op (returning False) where libc is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from glibc's malloc.h
    return all(
        libc.mallopt(option, value) == 1
        for option, value in (
            (m_mmap_threshold, 32 << 20),
            (m_trim_threshold, 1 << 30),
            (m_top_pad, 64 << 20),
        )
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The mixed-precision context for `precision` (TrainConfig.precision) on `device`.

    auto is bf16 autocast on CUDA and full fp32 on CPU; bf16 autocasts on either device (on CPU
    it is only faster with native bf16 instructions, e.g. AVX512-BF16 or AMX).
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: expected auto, fp32 or bf16")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_spec(data: IngestData, model_cfg: ModelConfig, train_cfg: TrainConfig) -> ModelSpec:
    """The spec `fit` builds: the model config as hparams, plus TrainConfig.embedding_l2 (the weight
    the models' mini-batch aware regularization reads), and the data's vocab sizes."""
    hparams = model_cfg.model_dump(exclude={"name", "options"})
    clash = sorted(set(model_cfg.options) & set(hparams))
    if clash:
        raise ValueError(f"model.options {clash} repeat model fields; set them as model.<field>")
    hparams.update(model_cfg.options)
    hparams["embedding_l2"] = train_cfg.embedding_l2
    return ModelSpec(name=model_cfg.name, hparams=hparams, vocab_sizes=dict(data.vocab_sizes))


def batch_keys(model: CtrModel) -> tuple[str, ...]:
    """The keys to build for `model`; ValueError when it needs one training batches cannot hold."""
    missing = [key for key in model.required_inputs if key not in BATCH_KEYS]
    if missing:
        raise ValueError(
            f"model {model.spec.name!r} requires batch keys {missing}, which training batches do not "
            f"provide; they provide: {', '.join(BATCH_KEYS)}"
        )
    optional = [
        key for key in model.optional_inputs if key in BATCH_KEYS and key not in model.required_inputs
    ]
    return (*model.required_inputs, *optional)


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel (one pass per tensor instead of a dozen) on CPU and CUDA."""
    fused = _model_device(model).type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=lr, fused=fused)


def _to(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


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
    batch = _to(batch, device)
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


def _check_vocab(model: CtrModel, data: IngestData) -> None:
    for entity, size in data.vocab_sizes.items():
        model_size = model.spec.vocab_sizes.get(entity)
        if model_size is not None and model_size < size:
            raise ValueError(
                f"the model knows {model_size} {entity} ids, the data has {size}; score it on "
                f"data.restricted_to(model.spec.vocab_sizes) so unseen ids become PAD"
            )


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _predict(model: CtrModel, builder: BatchBuilder, examples: Examples, batch_size: int) -> np.ndarray:
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for batch, _ in builder.batches(examples, batch_size):
            with autocast(device):
                logits = model(_to(batch, device))
            chunks.append(torch.sigmoid(logits.float()).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks)


def _builder_for(model: CtrModel, data: IngestData) -> BatchBuilder:
    _check_vocab(model, data)
    return BatchBuilder(data, model.sequence_lengths(), batch_keys(model))


def predict(model: CtrModel, data: IngestData, split: str, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Click probabilities (N,) float32 for the examples of `split`, in their stored order."""
    return _predict(model, _builder_for(model, data), data.split(split), batch_size)


def evaluate(
    model: CtrModel, data: IngestData, split: str, batch_size: int = EVAL_BATCH_SIZE
) -> dict[str, float]:
    """auc, gauc, logloss, calibration and n of `model` on `split`."""
    examples = data.split(split)
    probs = _predict(model, _builder_for(model, data), examples, batch_size)
    return ctr_metrics(examples.user, examples.label, probs)


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

    Every epoch writes a checkpoint there when `train_cfg.checkpoint_dir` is set (rank 0 only).

    Returns: the best model (eval mode), its spec, the per-epoch history and best metrics.
    """
    if train_cfg.epochs <= 0:
        raise ValueError(f"train.epochs = {train_cfg.epochs}: must be > 0")
    seed_everything(train_cfg.seed)
    device = resolve_device(train_cfg.device)
    ctx = distributed_context()
    if ctx.enabled:
        device = _init_distributed(ctx, device)
    threads = configure_threads()
    if device.type == "cpu":
        tune_allocator()
    train, valid, test = data.split("train"), data.split("valid"), data.split("test")

    spec = model_spec(data, model_cfg, train_cfg)
    model = build_model(spec)
    model.prepare(id_counts(data))
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
                _sync_buffers(model)  # e.g. Dice's running statistics: one model to evaluate and keep
                dist.all_reduce(loss_sum)
            train_loss = float(loss_sum) / (per_rank * ctx.world_size)
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"epoch {epoch}: training loss is {train_loss}; lower train.lr")
            seconds = time.perf_counter() - started
            valid_metrics = _predict_metrics(model, builder, valid)
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
        drift = _replica_max_diff(model)
        if drift > 0:
            raise RuntimeError(f"data-parallel replicas disagree after training: max |Δweight| = {drift}")
    best_valid = _predict_metrics(model, builder, valid)
    test_probs = _predict(model, builder, test, EVAL_BATCH_SIZE)
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


def _predict_metrics(model: CtrModel, builder: BatchBuilder, examples: Examples) -> dict[str, float]:
    probs = _predict(model, builder, examples, EVAL_BATCH_SIZE)
    return ctr_metrics(examples.user, examples.label, probs)
