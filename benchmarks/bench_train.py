"""Measure DIN training throughput (samples/s) beside a straightforward reference DIN in one process.

Both train on the same synthetic data through the same batch gathering (CSR histories, full
length L), with Adam and BCE on logits; only the model differs. The reference builds the
[e, q, e − q, e ⊙ q] concatenation for every (behavior, candidate) pair and runs a plain MLP on
it, as most public DIN implementations do. Timed rounds alternate between the two; rounds in
which other processes took CPU are retried, and the median clean round is reported.

    python -m benchmarks.bench_train --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import yaml
from torch import nn

from seqrank.config import ModelConfig, TrainConfig
from training.batching import BatchBuilder, batch_keys
from training.ingest_data import Behaviors, Examples, IngestData
from training.models import CtrModel, ModelSpec, build_model
from training.runtime import configure_threads, resolve_device, tune_allocator
from training.trainer import make_optimizer, model_spec, train_step


def synthetic_data(
    seq_len: int, users: int = 10_000, items: int = 100_000, categories: int = 1_000, seed: int = 0
) -> IngestData:
    """Random ids; every user has at least `seq_len` behaviors and every example a full history."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(seq_len, 3 * seq_len, size=users)
    total = int(lengths.sum())
    item = rng.integers(1, items, size=total)
    behaviors = Behaviors.from_lists(
        users=np.arange(1, users + 1),
        lengths=lengths,
        columns={"item": item, "category": item % (categories - 1) + 1, "ts": np.arange(total)},
        num_users=users + 1,
    )
    n = 20 * users
    user = rng.integers(1, users + 1, size=n)
    target = rng.integers(1, items, size=n)
    examples = Examples(
        user=user,
        item=target,
        category=target % (categories - 1) + 1,
        ts=np.zeros(n, dtype=np.int64),
        label=(rng.random(n) < 0.2).astype(np.float32),
        hist_end=rng.integers(seq_len, lengths[user - 1] + 1),
        position=np.zeros(n, dtype=np.int32),
        session=np.zeros(n, dtype=np.int32),
        split=np.zeros(n, dtype=np.int8),
    )
    return IngestData(examples, behaviors, {"user": users + 1, "item": items, "category": categories})


class ReferenceDice(nn.Module):
    """Dice written the usual way: batch norm, sigmoid, mix of x and αx."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(size, eps=1e-8, affine=False)
        self.alpha = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.norm(x))
        return p * x + (1 - p) * self.alpha * x


class ReferenceDIN(CtrModel):
    """A straightforward DIN: the activation unit runs on the concatenation for every pair."""

    required_inputs = ("user", "item", "category", "hist_item", "hist_category")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        d = spec.hparams["embedding_dim"]
        sizes = spec.vocab_sizes
        self.user = nn.Embedding(sizes["user"], d, padding_idx=0)
        self.item = nn.Embedding(sizes["item"], d, padding_idx=0)
        self.category = nn.Embedding(sizes["category"], d, padding_idx=0)
        att, mlp = [], []
        width = 8 * d
        for size in spec.hparams["attention_hidden"]:
            att += [nn.Linear(width, size), nn.Sigmoid()]
            width = size
        self.attention = nn.Sequential(*att, nn.Linear(width, 1))
        width = 7 * d
        for size in spec.hparams["mlp_hidden"]:
            mlp += [nn.Linear(width, size), ReferenceDice(size)]
            width = size
        self.mlp = nn.Sequential(*mlp, nn.Linear(width, 1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        query = torch.cat([self.item(batch["item"]), self.category(batch["category"])], -1)  # (B, 2D)
        keys = torch.cat([self.item(batch["hist_item"]), self.category(batch["hist_category"])], -1)
        q = query.unsqueeze(1).expand_as(keys)  # (B, L, 2D)
        scores = self.attention(torch.cat([keys, q, keys - q, keys * q], -1)).squeeze(-1)  # (B, L)
        scores = scores * (batch["hist_item"] != 0)
        interest = (scores.unsqueeze(-1) * keys).sum(1)  # (B, 2D)
        user = self.user(batch["user"])
        return self.mlp(torch.cat([user, interest, query, interest * query], -1)).squeeze(-1)


class _Clock:
    """Times a block of steps and says what share of the machine other processes used meanwhile.

    The machine may be shared; a round during which others took CPU measures them, not us, so
    such rounds are retried. Other processes' share comes from /proc/stat (Linux) minus our own
    CPU time; elsewhere it reads 0.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.cpus = os.cpu_count() or 1

    @staticmethod
    def _busy_ticks() -> int:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
        except OSError:
            return 0
        return sum(fields) - fields[3] - fields[4]  # all but idle and iowait

    def run(self, step: Callable[[], object], steps: int) -> tuple[float, float]:
        """(seconds, share of all CPUs used by other processes) for `steps` calls of `step`."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        busy, own, started = self._busy_ticks(), time.process_time(), time.perf_counter()
        for _ in range(steps):
            step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        others = (self._busy_ticks() - busy) / self.tick - (time.process_time() - own)
        return seconds, max(0.0, others) / (seconds * self.cpus)


def benchmark_train(
    model: str = "din",
    seq_len: int = 100,
    dim: int = 16,
    batch: int = 1024,
    steps: int = 20,
    warmup: int = 3,
    rounds: int = 3,
    reference: bool = True,
    compile: bool = False,
    precision: str = "auto",
    threads: int | None = None,
    max_other_share: float = 0.05,
    options: dict[str, object] | None = None,
) -> dict[str, object]:
    """Training samples/s of `model` (and of the reference DIN) on synthetic batches.

    A step gathers a random batch, runs forward and backward and an Adam update, through the
    trainer's own `train_step`. After `warmup` untimed steps, each model runs `rounds` rounds of
    `steps` timed steps, alternating; a round during which other processes used more than
    `max_other_share` of the CPUs is retried (up to 4x `rounds` attempts per model) and the
    median clean round is reported. Attention layers are 80-40, the MLP 200-80, embedding_l2 the
    TrainConfig default (the reference skips regularization, which only flatters it).
    `precision` is TrainConfig.precision (auto: fp32 on CPU) and applies to both models;
    `threads` sets torch's intra-op threads (default: one per available CPU, as the trainer);
    `options` are model.options (e.g. {"search": "soft"} for sim).
    """
    torch.manual_seed(0)
    device = resolve_device("auto")
    if threads is not None:
        torch.set_num_threads(threads)
    threads = configure_threads()
    if device.type == "cpu":
        tune_allocator()  # as fit() does
    data = synthetic_data(seq_len)
    model_cfg = ModelConfig(name=model, embedding_dim=dim, seq_len=seq_len, options=dict(options or {}))
    spec = model_spec(data, model_cfg, TrainConfig())
    candidates: dict[str, CtrModel] = {"model": build_model(spec).to(device)}
    if reference:
        reference_spec = ModelSpec("reference_din", spec.hparams, spec.vocab_sizes)
        candidates["reference"] = ReferenceDIN(reference_spec).to(device)

    rng = np.random.default_rng(0)
    builders = {
        name: BatchBuilder(data, m.sequence_lengths(), batch_keys(m)) for name, m in candidates.items()
    }

    def make_step(name: str) -> Callable[[], None]:
        net = candidates[name]
        optimizer = make_optimizer(net, lr=1e-3)
        forward = torch.compile(net) if compile and name == "model" else None

        def step() -> None:
            index = rng.integers(0, len(data.examples), size=batch)
            tensors, labels = builders[name].build(data.examples, index)
            train_step(net, optimizer, tensors, labels, device, forward, precision)

        return step

    clock = _Clock(device)
    runners = {name: make_step(name) for name in candidates}
    for run in runners.values():
        clock.run(run, warmup)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    discarded = 0
    for _ in range(4 * rounds):
        if all(len(r) >= rounds for r in rates.values()):
            break
        for name, run in runners.items():
            seconds, others = clock.run(run, steps)
            if others <= max_other_share:
                rates[name].append(steps * batch / seconds)
            else:
                discarded += 1
    if not all(rates.values()):
        raise RuntimeError(
            f"other processes kept more than {max_other_share:.0%} of the CPUs busy in every round; "
            "rerun on a quieter machine or raise max_other_share"
        )

    gather_index = rng.integers(0, len(data.examples), size=batch)
    gather_s = min(
        clock.run(lambda: builders["model"].build(data.examples, gather_index), 1)[0] for _ in range(10)
    )
    result: dict[str, object] = {
        "model": model,
        "samples_per_s": round(statistics.median(rates["model"])),
        "device": str(device),
        "threads": threads,
        "precision": "bf16"
        if precision == "bf16" or (precision == "auto" and device.type == "cuda")
        else "fp32",
        "compile": compile,
        "seq_len": seq_len,
        "dim": dim,
        "batch": batch,
        "gather_ms_per_batch": round(gather_s * 1000, 2),
        "rounds_samples_per_s": [round(r) for r in rates["model"]],
        "contended_rounds_discarded": discarded,
    }
    if reference:
        ref = statistics.median(rates["reference"])
        result["reference_samples_per_s"] = round(ref)
        result["speedup"] = round(statistics.median(rates["model"]) / ref, 2)
        result["rounds_reference_samples_per_s"] = [round(r) for r in rates["reference"]]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="din")
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round and model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="skip the reference DIN")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (not the reference)")
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"], help="as train.precision"
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: one per available CPU)")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model.options entry (repeatable)",
    )
    parser.add_argument(
        "--max-other-share",
        type=float,
        default=0.05,
        help="discard a round when other processes used more of the CPUs than this",
    )
    args = parser.parse_args(argv)
    result = benchmark_train(
        model=args.model,
        seq_len=args.seq_len,
        dim=args.dim,
        batch=args.batch,
        steps=args.steps,
        warmup=args.warmup,
        rounds=args.rounds,
        reference=not args.no_reference,
        compile=args.compile,
        precision=args.precision,
        threads=args.threads,
        max_other_share=args.max_other_share,
        options=dict(_option(item) for item in args.option),
    )
    print(json.dumps(result))


def _option(item: str) -> tuple[str, object]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--option {item!r}: expected KEY=VALUE")
    return key, yaml.safe_load(raw)


if __name__ == "__main__":
    main()
