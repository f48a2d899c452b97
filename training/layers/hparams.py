"""Checked reads of the shared hyperparameters (ModelConfig fields) in `ModelSpec.hparams`; errors name key and value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from seqrank.config import ModelConfig


def config_default(key: str) -> Any:
    """ModelConfig's default for the shared hparam `key`, the one place it is set: what a spec
    lacking the key (saved before the field existed) gets."""
    return ModelConfig.model_fields[key].get_default(call_default_factory=True)


def positive_int(hparams: Mapping[str, Any], key: str, default: int | None = None) -> int:
    """hparams[key] as an int > 0; `default` when absent (required when None)."""
    value = hparams.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"hparams[{key!r}] = {value!r}: must be a positive int")
    return value


def layer_sizes(hparams: Mapping[str, Any], key: str) -> list[int]:
    sizes = hparams.get(key)
    if (
        not isinstance(sizes, list | tuple)
        or not sizes
        or any(not isinstance(s, int) or isinstance(s, bool) or s <= 0 for s in sizes)
    ):
        raise ValueError(f"hparams[{key!r}] = {sizes!r}: needs a non-empty list of positive ints")
    return list(sizes)


def l2_weight(hparams: Mapping[str, Any]) -> float:
    """The mini-batch aware L2 weight, `embedding_l2`; 0 (off) when absent."""
    value = hparams.get("embedding_l2", 0.0)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"hparams['embedding_l2'] = {value!r}: must be a number >= 0")
    return float(value)
