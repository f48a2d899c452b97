"""Checked reads of model hyperparameters from `ModelSpec.hparams`, with errors naming key and value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def positive_int(hparams: Mapping[str, Any], key: str, default: int | None = None) -> int:
    """hparams[key] as an int > 0; `default` when absent (required when None)."""
    value = hparams.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"hparams[{key!r}] = {value!r}: must be a positive int")
    return value


def non_negative(hparams: Mapping[str, Any], key: str, default: float) -> float:
    """hparams[key] as a number >= 0 (a loss weight, a rate); `default` when absent."""
    value = hparams.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"hparams[{key!r}] = {value!r}: must be a number >= 0")
    return float(value)


def positive_float(hparams: Mapping[str, Any], key: str, default: float) -> float:
    """hparams[key] as a number > 0 (a temperature, a scale); `default` when absent."""
    value = hparams.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"hparams[{key!r}] = {value!r}: must be a number > 0")
    return float(value)


def choice(hparams: Mapping[str, Any], key: str, choices: Sequence[str], default: str) -> str:
    """hparams[key], one of `choices`; `default` when absent."""
    value = hparams.get(key, default)
    if value not in choices:
        raise ValueError(f"hparams[{key!r}] = {value!r}: expected one of {', '.join(choices)}")
    return str(value)


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
