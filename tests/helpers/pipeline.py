"""Tiny pipeline runs: a config small enough for a test, and generated logs for it."""

from __future__ import annotations

from pathlib import Path

from seqrank.config import PipelineConfig

TINY = [
    "generator.users=300",
    "generator.items=300",
    "generator.categories=12",
    "generator.days=10",
    "generator.seed=3",
    "train.epochs=3",
    "train.batch_size=256",
    "train.lr=0.01",
    "validate.min_examples=100",
    "features.max_sequence_length=200",
    "features.category_k=50",
    # These runs test the wiring, not the machine's speed: a loaded machine must not reject the model.
    "gate.latency_budget_ms=200",
]


def generated_logs(cfg: PipelineConfig, raw: Path) -> tuple[list[str], Path, Path]:
    """Generate `cfg.generator`'s logs into `raw`; return (inputs, users, items) for `run_local`."""
    from simulator import generate

    generate(cfg.generator, raw)
    return [str(raw / "events.jsonl")], raw / "users.parquet", raw / "items.parquet"
