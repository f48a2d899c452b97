"""DIEN: Deep Interest Evolution Network (Zhou et al., AAAI 2019, arXiv:1809.03672)."""

from __future__ import annotations

from typing import Literal, overload

import torch
from pydantic import Field, NonNegativeFloat, PositiveInt
from torch import nn

from training.batch import Batch
from training.layers import MLP, TargetAttention, longest_row
from training.layers.gru import AUGRU, gather_steps, left_align
from training.layers.hparams import layer_sizes
from training.models.base import LayerSizes, MlpActivation, ModelOptions, ModelSpec
from training.models.sequence import BehaviorSequenceModel


class DIENOptions(ModelOptions):
    gru_hidden: PositiveInt | None = Field(
        None, description="H; None: 2D (the paper keeps the embedding size)"
    )
    aux_weight: NonNegativeFloat = Field(
        1.0, description="the paper's α on the auxiliary loss; 0 turns it off"
    )
    aux_hidden: LayerSizes = Field([100, 50], description="hidden sizes of the auxiliary network")
    attention: Literal["bilinear", "mlp"] = Field(
        "bilinear", description="bilinear: the paper's eq. 5; mlp: the released code"
    )
    mlp_activation: MlpActivation = "dice"


class DIEN(BehaviorSequenceModel):
    """Deep Interest Evolution Network: a GRU extracts interests from the behavior sequence, and an
    attention-gated GRU (AUGRU) evolves the ones relevant to the candidate (Zhou et al. 2019).

    Notation: B batch, L history length (hparams seq_len), T ≤ L the longest real history in the
    batch, D embedding_dim, H gru_hidden. Items are [item ⊕ category] embeddings (2D).

        user       (B, D)          user embedding
        target     (B, 2D)         the candidate e_a
        history    (B, T, 2D)      the behaviors, moved to the front of each row (the batch stores
                                   them right-aligned) so that PAD steps come after the real ones
        states     (B, T, H)       interest extractor: nn.GRU over the history, h_t
        attention  (B, T)          a_t = softmax over the real steps of h_t W e_a (eq. 5; "mlp":
                                   the DIN activation unit on h_t and a projection of e_a), 0 at PAD
        evolved    (B, H)          AUGRU(states, attention), its final state; a_t = 0 keeps the
                                   state, so PAD steps never change it
        summed     (B, 2D)         Σ of the behavior embeddings
        MLP([user, target, summed, target ⊙ summed, evolved]) → logit (B,), the inputs of the
        authors' released code.

    Auxiliary loss (eq. 4): every extractor state h_t with a real next behavior predicts that
    behavior e_{t+1} against a negative ê_{t+1}: −log σ(f(h_t, e_{t+1})) − log(1 − σ(f(h_t, ê_{t+1}))),
    f a small MLP on [h_t, e] (sigmoid layers, as in the authors' code), averaged over the (row, t)
    pairs. The last real step and PAD steps have no next behavior and are skipped. Negatives are
    drawn uniformly, with replacement, from all real behaviors of the batch (other users' clicks
    mostly, so roughly by popularity; a draw equal to the positive is rare and left in). Given
    the click labels (training), forward returns aux_weight × the loss beside the logits.

    Cost: the time loop of the AUGRU is inherent (h_t needs h_{t−1}); the extractor is the fused
    nn.GRU, and both run only T steps. The auxiliary network on 2·B·T rows is the largest part of a
    training step at the default aux_hidden (about 2/3 on CPU at B = 1024, L = 100, D = 16);
    aux_hidden [32] roughly halves the step. Serving (eval mode) skips it.

    Hparams: embedding_dim, seq_len, mlp_hidden, embedding_l2 (mini-batch aware L2, as in DIN),
    attention_hidden (only for attention "mlp"), and options:
        gru_hidden     H, default 2D (the paper keeps the embedding size)
        aux_weight     weight of the auxiliary loss, default 1.0 (the paper's α); 0 turns it off
        aux_hidden     hidden sizes of the auxiliary network, default [100, 50]
        attention      "bilinear" (default, the paper's eq. 5) or "mlp" (the released code)
        mlp_activation "dice" (default) or "prelu", "relu", "sigmoid"
    """

    Options = DIENOptions
    options: DIENOptions
    has_auxiliary_loss = True

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hp, dim, opts = spec.hparams, self.dim, self.options
        hidden = opts.gru_hidden or 2 * dim
        self.aux_weight = opts.aux_weight
        self.attention_kind = opts.attention
        mlp_hidden = layer_sizes(hp, "mlp_hidden")

        self.extractor = nn.GRU(2 * dim, hidden, batch_first=True)
        if self.attention_kind == "bilinear":
            self.bilinear = nn.Linear(2 * dim, hidden, bias=False)  # W e_a, scored against h_t
        else:
            self.query = nn.Linear(2 * dim, hidden)
            self.scorer = TargetAttention(hidden, layer_sizes(hp, "attention_hidden"), activation="sigmoid")
        self.evolution = AUGRU(hidden, hidden)
        self.auxiliary = MLP(hidden + 2 * dim, opts.aux_hidden, activation="sigmoid", out_dim=1)
        self.mlp = MLP(7 * dim + hidden, mlp_hidden, activation=opts.mlp_activation, out_dim=1)

    @overload
    def forward(self, batch: Batch) -> torch.Tensor: ...
    @overload
    def forward(self, batch: Batch, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def forward(
        self, batch: Batch, labels: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,) for a batch holding `required_inputs` (see training.models.base); with the
        click labels (training), (logits, aux_weight × the next-behavior loss)."""
        user = self.embeddings.user(batch)  # (B, D)
        target, history, mask = self.embeddings.target_and_history(batch)  # (B, 2D), (B, L, 2D), (B, L)
        # Zero the PAD steps: their category id may be set even where the item is PAD.
        history = history * mask.unsqueeze(-1).to(history.dtype)
        summed = history.sum(dim=1)  # (B, 2D)

        index, mask = left_align(mask, longest_row(mask))  # (B, T), (B, T)
        history = gather_steps(history, index)  # (B, T, 2D)
        states, _ = self.extractor(history)  # (B, T, H); past a row's length: garbage, masked below
        auxiliary = None if labels is None else self._auxiliary(states, history, mask)

        attention = self._attention(target, states, mask)  # (B, T)
        evolved = self.evolution(states, attention)  # (B, H)
        features = torch.cat([user, target, summed, target * summed, evolved], dim=1)  # (B, 7D + H)
        logits = self.mlp(features).squeeze(1) + self.position_logit(batch)
        if labels is None:
            return logits
        return logits, self.zero_loss() if auxiliary is None else auxiliary

    def _attention(self, target: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Softmax over the real steps of the relevance of h_t to the candidate: (B, T), 0 at PAD."""
        if self.attention_kind == "bilinear":
            scores = torch.bmm(states, self.bilinear(target).unsqueeze(2)).squeeze(2)  # (B, T)
        else:
            scores = self.scorer.scores(self.query(target), states, mask)  # (B, T)
        # A finite fill, not −inf, so rows without history give zeros and finite gradients.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=1) * mask.to(scores.dtype)

    def _auxiliary(
        self, states: torch.Tensor, history: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor | None:
        """aux_weight × mean next-behavior BCE over the steps with a real next behavior (eq. 4)."""
        if self.aux_weight == 0.0:
            return None
        batch, steps, hidden = states.shape
        # Flat (b·T + t) indices of the pairs, step t with a real step t + 1 (rows are left-aligned,
        # so step t is real too), and of every real behavior, the pool negatives are drawn from.
        has_next = torch.zeros_like(mask)
        has_next[:, :-1] = mask[:, 1:]
        pairs = has_next.flatten().nonzero().squeeze(1)  # (P,)
        if len(pairs) == 0:
            return None
        real = mask.flatten().nonzero().squeeze(1)  # (N,)
        negatives = real[torch.randint(len(real), (len(pairs),), device=real.device)]  # (P,)

        h = states.reshape(batch * steps, hidden).index_select(0, pairs)  # (P, H)
        items = history.reshape(batch * steps, -1).index_select(
            0, torch.cat([pairs + 1, negatives])
        )  # (2P, 2D)
        logits = self.auxiliary(torch.cat([h.repeat(2, 1), items], dim=1)).squeeze(1)  # (2P,)
        labels = torch.cat([logits.new_ones(len(pairs)), logits.new_zeros(len(pairs))])
        bce = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return self.aux_weight * 2.0 * bce  # both terms of eq. 4 per pair, not their mean
