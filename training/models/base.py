"""The model interface every ranking model implements, and its portable description (`ModelSpec`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# A batch is a dict of tensors. Every model reads the keys it needs:
#   user, item, category, ts      (B,)   int64 dense indices / epoch ms of the impression
#   hist_item, hist_category, hist_ts   (B, L) int64, right-aligned: the most recent behavior is at
#                                  [:, -1]; missing positions on the left are PAD (0).
# Histories are the user's behaviors strictly before `ts` (training gathers them with hist_end;
# serving reads them from the Feast online store), so both see exactly the same tensors.
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model without training code: name, hyperparameters, vocab sizes."""

    name: str
    hparams: dict[str, Any]  # the model section of the config (embedding_dim, seq_len, layer sizes, ...)
    vocab_sizes: dict[str, int] = field(default_factory=dict)  # entity -> rows, including PAD at 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(name=data["name"], hparams=dict(data["hparams"]), vocab_sizes=dict(data["vocab_sizes"]))


class CtrModel(nn.Module):
    """Base class: `forward(batch) -> logits (B,)`; the trainer owns loss, optimizer and device."""

    # Batch keys the model cannot run without; the trainer checks them to fail with a clear error.
    required_inputs: tuple[str, ...] = ("user", "item", "category")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def regularization(self, batch: Batch) -> torch.Tensor:
        """Extra loss term (e.g. mini-batch aware L2); zero unless a model overrides it."""
        return torch.zeros((), device=next(self.parameters()).device)
