"""Transformer encoder layer with a key padding mask, as BST applies it to behavior sequences."""

from __future__ import annotations

import torch
from torch import nn


class TransformerEncoderLayer(nn.Module):
    """Self-attention block of BST (Chen et al., DLP-KDD 2019, "Behavior Sequence Transformer for
    E-commerce Recommendation in Alibaba", section 2.3), after the original Transformer.

    Notation: B batch, S sequence length, W width (divisible by `heads`), F ffn_hidden.

        S' = LayerNorm(E + Dropout(MultiHead(E)))                  keys at PAD positions masked
        out = LayerNorm(S' + Dropout(LeakyReLU(S' W_1 + b_1) W_2 + b_2))
        MultiHead(E) = [head_1 … head_h] W^O,  head_i = softmax(E W_i^Q (E W_i^K)ᵀ / √(W/h)) E W_i^V

    Post-norm and LeakyReLU as in the paper. Dropout is on the two residual branches, as in the
    paper's equations, not on the attention weights: that would draw a mask for every one of the
    B·h·S² scores and force the unfused attention path, which measured about twice the cost of
    the fused `scaled_dot_product_attention` here (CPU, S = 101). Outputs at PAD positions are
    computed (they attend to the real keys like any query) but mean nothing; callers drop them.

    Args:
        width: W.
        heads: attention heads h, each of size W / h.
        ffn_hidden: F, the feed-forward hidden size.
        dropout: rate on the attention weights and on both residual branches.
        negative_slope: LeakyReLU slope of the feed-forward layer.

    Shapes: x (B, S, W), padding (B, S) bool, True = PAD key → (B, S, W). Every row needs at least
    one real key (a row of PAD only has nothing to attend to; its outputs are NaN).
    """

    def __init__(
        self, width: int, heads: int, ffn_hidden: int, dropout: float = 0.0, negative_slope: float = 0.01
    ) -> None:
        super().__init__()
        if width <= 0 or heads <= 0 or width % heads:
            raise ValueError(f"transformer width = {width}, heads = {heads}: heads must divide width")
        if ffn_hidden <= 0:
            raise ValueError(f"transformer ffn_hidden = {ffn_hidden}: must be > 0")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"transformer dropout = {dropout}: must be in [0, 1)")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)  # W^Q, W^K, W^V of all heads in one product
        self.out = nn.Linear(width, width)  # W^O
        self.norm_attention = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, ffn_hidden), nn.LeakyReLU(negative_slope), nn.Linear(ffn_hidden, width)
        )
        self.norm_ffn = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        # (B, S, 3W) → three (B, h, S, W/h)
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        keep = ~padding[:, None, None, :]  # (B, 1, 1, S): True = attend to this key
        heads = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, h, S, W/h)
        attended = self.out(heads.transpose(1, 2).reshape(batch, length, width))  # (B, S, W)
        x = self.norm_attention(x + self.dropout(attended))
        return self.norm_ffn(x + self.dropout(self.ffn(x)))  # (B, S, W)
