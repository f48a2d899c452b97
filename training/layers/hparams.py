"""Checked reads of model hyperparameters from `ModelSpec.hparams`, with errors naming key and value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def positive_int(hparams: Mapping[str, Any], key: str) -> int:
    value = hparams.get(key)
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
