"""DIN: Deep Interest Network (Zhou et al., KDD 2018, arXiv:1706.06978)."""

from __future__ import annotations

import torch

from training.batch import Batch
from training.layers import MLP, TargetAttention
from training.layers.hparams import layer_sizes
from training.models.base import ModelSpec
from training.models.sequence import BehaviorSequenceModel, DenseOptions


class DINOptions(DenseOptions):
    """DIN has no options of its own: every hparam it reads is a ModelConfig field."""


class DIN(BehaviorSequenceModel):
    """Deep Interest Network: the candidate attends over the user's behaviors (Zhou et al. 2018).

    Notation: B batch, L history length (hparams seq_len), D embedding_dim. Items — candidate and
    behaviors — are [item ⊕ category] embeddings (2D), tables shared between the two.

        user      (B, D)        user embedding
        target    (B, 2D)       the candidate
        history   (B, L, 2D)    the behaviors, PAD masked
        interest  (B, 2D)       Σ_l a(e_l, target) · e_l, the local activation unit, no softmax
        MLP([user, interest, target, interest ⊙ target]) with Dice → logit (B,)

    Hparams (ModelConfig fields): embedding_dim, seq_len, attention_hidden (activation unit sizes,
    sigmoid as in the authors' code), mlp_hidden (Dice), and embedding_l2: the weight of the
    mini-batch aware L2 on the embedding rows a batch uses (the paper's Mini-batch Aware
    Regularization; the trainer copies it from TrainConfig into the hparams, 0 or absent disables
    it). Serving ignores embedding_l2. With hparams dense "normalized" or "autodis" the candidate's
    continuous features (batch key item_dense) join the MLP input.
    """

    Options = DINOptions

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hp, dim = spec.hparams, self.dim
        self.attention = TargetAttention(2 * dim, layer_sizes(hp, "attention_hidden"), activation="sigmoid")
        self.mlp = MLP(
            7 * dim + self.enable_dense(), layer_sizes(hp, "mlp_hidden"), activation="dice", out_dim=1
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (B,) for a batch holding `required_inputs` (see training.models.base)."""
        user = self.embeddings.user(batch)  # (B, D)
        target, history, mask = self.embeddings.target_and_history(batch)  # (B, 2D), (B, L, 2D), (B, L)
        interest = self.attention(target, history, mask)  # (B, 2D)
        features = torch.cat([user, interest, target, interest * target], dim=1)  # (B, 7D)
        features = self.with_dense(batch, features)  # (B, 7D + dense width) when hparams dense is on
        return self.mlp(features).squeeze(1) + self.position_logit(batch)
