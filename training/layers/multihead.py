"""Multi-head target attention with PAD masking: the candidate attends over a set of behaviors."""

from __future__ import annotations

import math

import torch
from torch import nn


class MultiHeadTargetAttention(nn.Module):
    """Scaled dot-product attention of one query over L keys, per head, PAD masked.

    The Exact Search Unit of SIM (Pi et al., CIKM 2020, "Search-based User Interest Modeling with
    Lifelong Sequential Behavior Data for CTR Prediction", section 3.2): for head i

        score_i = softmax_l( (W_a^i q) · (W_b^i z_l) / sqrt(H_d) )      over the real behaviors
        head_i  = Σ_l score_i,l · z_l
        output  = [head_1, ..., head_h]

    As in the paper, each head weighs the behaviors themselves (no value projection), so heads
    differ only in which behaviors they look at, and the output keeps the behaviors' space.

    Notation: B batch, L behaviors, Q query size, E behavior (key) size, h heads, H_d head size.

    Args:
        query_dim: Q.
        key_dim: E.
        heads: h.
        head_dim: H_d, the size each head projects query and keys to; default Q.

    Shapes: query (B, Q), keys (B, L, E), mask (B, L) bool (True = real behavior) → (B, h·E).
    A row without any real behavior gets a zero output (not NaN), as do PAD positions no weight.
    """

    def __init__(self, query_dim: int, key_dim: int, heads: int, head_dim: int | None = None) -> None:
        super().__init__()
        head_dim = query_dim if head_dim is None else head_dim
        for name, value in (
            ("query_dim", query_dim),
            ("key_dim", key_dim),
            ("heads", heads),
            ("head_dim", head_dim),
        ):
            if value <= 0:
                raise ValueError(f"multi-head attention {name} = {value}: must be > 0")
        self.heads = heads
        self.head_dim = head_dim
        self.key_dim = key_dim
        self.query_proj = nn.Linear(query_dim, heads * head_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, heads * head_dim, bias=False)

    @property
    def out_dim(self) -> int:
        return self.heads * self.key_dim

    def weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, h, L): each head's softmax over the real behaviors, 0 at PAD and
        everywhere in a row with no real behavior."""
        batch, length, _ = keys.shape
        q = self.query_proj(query).view(batch, self.heads, 1, self.head_dim)  # (B, h, 1, H_d)
        k = (
            self.key_proj(keys).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        )  # (B, h, L, H_d)
        logits = (q @ k.transpose(2, 3)).squeeze(2) / math.sqrt(self.head_dim)  # (B, h, L)
        real = mask.unsqueeze(1)  # (B, 1, L)
        # A finite floor instead of -inf: an all-PAD row then has a uniform softmax (no NaN), which
        # the multiplication by the mask turns into zeros.
        logits = logits.masked_fill(~real, torch.finfo(logits.dtype).min)
        return torch.softmax(logits, dim=-1) * real.to(logits.dtype)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if keys.shape[-1] != self.key_dim or query.shape[0] != keys.shape[0] or mask.shape != keys.shape[:2]:
            raise ValueError(
                f"multi-head attention expects query (B, Q), keys (B, L, {self.key_dim}), mask (B, L); "
                f"got {tuple(query.shape)}, {tuple(keys.shape)}, {tuple(mask.shape)}"
            )
        weights = self.weights(query, keys, mask)  # (B, h, L)
        return (weights @ keys).flatten(1)  # (B, h·E)
