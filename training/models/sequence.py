"""Shared base of the models that read the behavior sequence: embeddings and mini-batch aware L2."""

from __future__ import annotations

import torch

from training.layers import BehaviorEmbeddings
from training.layers.hparams import l2_weight, positive_int
from training.models.base import Batch, CtrModel, ModelSpec


class BehaviorSequenceModel(CtrModel):
    """Holds the [item ⊕ category] and user embeddings (`self.embeddings`), D (`self.dim`), L
    (`self.seq_len`) and the mini-batch aware L2 weight (`self.l2`, hparams embedding_l2; the
    paper's Mini-batch Aware Regularization, 0 or absent disables it)."""

    required_inputs = ("user", "item", "category", "hist_item", "hist_category")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.dim = positive_int(spec.hparams, "embedding_dim")
        self.seq_len = positive_int(spec.hparams, "seq_len")
        self.l2 = l2_weight(spec.hparams)
        self.embeddings = BehaviorEmbeddings(spec.vocab_sizes, self.dim)

    def regularization(self, batch: Batch) -> torch.Tensor:
        """embedding_l2 · Σ ||w||² over the embedding rows this batch reads."""
        if self.l2 == 0.0:
            return super().regularization(batch)
        return self.l2 * self.embeddings.batch_l2(batch, (*self.required_inputs, *self.optional_inputs))
