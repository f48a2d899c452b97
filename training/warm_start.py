"""Warm start: a new model begins from a previous model's weights where they still fit.

The vocab is append-only (DESIGN §3), so row `i` of an id-embedding table means the same id in
every run; a later run's tables only have more rows. Weights of equal shape are copied whole,
tables that grew are copied row by row for the ids both runs know (the new rows keep their fresh
initialisation), and anything else (another architecture, another width) is left as initialised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class WarmStart:
    copied: list[str] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {"copied": len(self.copied), "grown": len(self.grown), "skipped": len(self.skipped)}


def warm_start(model: nn.Module, previous: Mapping[str, torch.Tensor]) -> WarmStart:
    """Load `previous` into `model` where shapes allow (see the module doc); return what was done."""
    result = WarmStart()
    own = model.state_dict()
    with torch.no_grad():
        for name, target in own.items():
            source = previous.get(name)
            if source is None or source.dtype != target.dtype:
                result.skipped.append(name)
            elif source.shape == target.shape:
                target.copy_(source)
                result.copied.append(name)
            elif (
                source.dim() == target.dim() >= 1
                and source.shape[1:] == target.shape[1:]
                and (source.shape[0] < target.shape[0])
            ):
                target[: source.shape[0]].copy_(source)
                result.grown.append(name)
            else:
                result.skipped.append(name)
    log.info("warm start: %s", result.summary())
    return result
