"""DIN target attention: the local activation unit that weighs each past behavior by the candidate."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from training.layers import fused
from training.layers.activation import make_activation

ATTENTION_ACTIVATIONS = ("sigmoid", "prelu", "relu")


class TargetAttention(nn.Module):
    """DIN activation unit (Zhou et al. 2018, "Deep Interest Network for CTR Prediction", fig. 2).

    Notation: B batch, L history length, D key/query size (all embeddings of one behavior,
    concatenated), H_1..H_k the hidden sizes.

    For each behavior e_l and candidate q the unit scores MLP([e, q, e − q, e ⊙ q]) and returns
    Σ_l score_l · e_l over the non-PAD positions. No softmax, as in the paper, so the output keeps
    the intensity of the user's interest.

    The first layer is never applied to the (B, L, 4D) concatenation. With its weight split as
    W = [W_e; W_q; W_d; W_p] over the four blocks,
        [e, q, e − q, e ⊙ q] W = e (W_e + W_d) + q (W_q − W_d) + e (diag(q) W_p),
    so the q-only term is computed once per candidate (B, H_1) and each behavior needs one
    (D × H_1) product with a per-candidate kernel (W_e + W_d + diag(q) W_p) instead of a
    (4D × H_1) one. The result is mathematically identical to the concatenated form; the
    parameters keep its layout, so `first` is exactly the paper's first layer. In fp32/fp64
    training on CPU the sigmoid unit runs fused, a few candidates at a time
    (training.layers.fused.sigmoid_unit).

    Args:
        dim: D.
        hidden: hidden sizes of the activation unit, e.g. (80, 40).
        activation: "sigmoid" (the authors' released code), "prelu" or "relu". Dice is not offered
            here: its batch statistics would be polluted by PAD positions.

    Shapes: query (B, D), keys (B, L, D), mask (B, L) bool (True = real behavior) → (B, D).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (80, 40), activation: str = "sigmoid") -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"attention dim = {dim}: must be > 0")
        if not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"attention hidden = {list(hidden)}: needs at least one layer, every size > 0")
        if activation not in ATTENTION_ACTIVATIONS:
            raise ValueError(
                f"attention activation {activation!r}: expected one of {', '.join(ATTENTION_ACTIVATIONS)}"
            )
        self.dim = dim
        self.activation = activation
        sizes = [4 * dim, *hidden]
        self.first = nn.Linear(sizes[0], sizes[1])
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(hidden))
        self.activations = nn.ModuleList(make_activation(activation, size) for size in hidden)
        self.out = nn.Linear(sizes[-1], 1)

    def scores(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weight of every behavior: (B, D), (B, L, D), (B, L) → (B, L), 0 at PAD."""
        self._check(query, keys)
        if fused.sigmoid_unit_applies(self.activation, keys):
            return fused.sigmoid_unit(query, keys, mask, self._linears())[0]
        return self._scores(query, keys, mask)

    def _scores(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, dim = keys.shape
        w_e, w_q, w_d, w_p = self.first.weight.split(dim, dim=1)  # each (H_1, D)
        per_query = torch.addmm(self.first.bias, query, (w_q - w_d).t())  # (B, H_1)
        kernel = torch.addcmul((w_e + w_d).t(), query.unsqueeze(2), w_p.t())  # (B, D, H_1)
        hidden = torch.baddbmm(per_query.unsqueeze(1), keys, kernel)  # (B, L, H_1)
        hidden = self._activate(0, hidden)  # (B·L, H_1)
        for i, linear in enumerate(self.layers, start=1):
            hidden = self._activate(i, linear(hidden))  # (B·L, H_i)
        raw = self.out(hidden).view(batch, length)
        return raw * mask.to(raw.dtype)

    def _activate(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Activation of hidden layer `layer`: (..., H) → (N, H)."""
        if self.activation == "sigmoid":
            # In place, as (B·L, H) pre-activations are the largest tensors of the model and neither
            # baddbmm nor linear needs its output for backward; on the base tensor, not a view of it,
            # or autograd copies the whole base.
            return hidden.sigmoid_().view(-1, hidden.shape[-1])
        return self.activations[layer](hidden.view(-1, hidden.shape[-1]))

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Σ_l score_l · e_l: (B, D), (B, L, D), (B, L) → (B, D)."""
        self._check(query, keys)
        if fused.sigmoid_unit_applies(self.activation, keys):
            return fused.sigmoid_unit(query, keys, mask, self._linears())[1]
        weights = self._scores(query, keys, mask)  # (B, L)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # (B, D)

    def _check(self, query: torch.Tensor, keys: torch.Tensor) -> None:
        batch, _, dim = keys.shape
        if dim != self.dim or query.shape != (batch, dim):
            raise ValueError(
                f"attention expects query (B, {self.dim}) and keys (B, L, {self.dim}); "
                f"got {tuple(query.shape)} and {tuple(keys.shape)}"
            )

    def _linears(self) -> list[nn.Linear]:
        return [self.first, *self.layers, self.out]
