"""Embedding&MLP baseline (GwEN): the base model of the DIN paper (Zhou et al., KDD 2018)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from training.batch import Batch
from training.layers import MLP
from training.layers.hparams import layer_sizes
from training.models.base import ModelSpec
from training.models.sequence import BehaviorSequenceModel, DenseOptions


class EmbMLPOptions(DenseOptions):
    pooling: Literal["sum", "mean"] = Field("sum", description="how the behaviors are pooled")


class EmbMLP(BehaviorSequenceModel):
    """Embedding&MLP: history pooled without regard to the candidate, then an MLP.

    The baseline DIN improves on (Zhou et al. 2018, fig. 2 left): every behavior counts the
    same whatever is being ranked. Notation: B batch, L history length, D embedding_dim.

        user      (B, D)
        target    (B, 2D)       [item ⊕ category] of the candidate
        history   (B, L, 2D)    PAD rows are zero vectors
        pooled    (B, 2D)       sum (the paper) or mean over the real behaviors
        MLP([user, pooled, target]) with PReLU → logit (B,)

    Hparams: embedding_dim, seq_len, mlp_hidden, optional pooling ("sum" or "mean", default
    "sum"), embedding_l2 (mini-batch aware L2 weight, as in DIN) and dense (item_dense joins the
    MLP input unless "off").
    """

    Options = EmbMLPOptions
    options: EmbMLPOptions

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hp, dim = spec.hparams, self.dim
        self.pooling = self.options.pooling
        self.mlp = MLP(
            5 * dim + self.enable_dense(), layer_sizes(hp, "mlp_hidden"), activation="prelu", out_dim=1
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (B,) for a batch holding `required_inputs` (see training.models.base)."""
        user = self.embeddings.user(batch)  # (B, D)
        target, history, mask = self.embeddings.target_and_history(batch)  # (B, 2D), (B, L, 2D), (B, L)
        pooled = history.sum(dim=1)  # (B, 2D); PAD rows are zero
        if self.pooling == "mean":
            pooled = pooled / mask.sum(dim=1, keepdim=True).clamp(min=1).to(pooled.dtype)
        features = self.with_dense(batch, torch.cat([user, pooled, target], dim=1))  # (B, 5D [+ dense])
        return self.mlp(features).squeeze(1) + self.position_logit(batch)
