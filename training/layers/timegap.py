"""Time-gap embeddings: how long before the impression each behavior happened, bucketed."""

from __future__ import annotations

import torch
from torch import nn

from seqrank.schema import PAD

MINUTE_MS = 60_000


def time_gap_buckets(
    ts: torch.Tensor, hist_ts: torch.Tensor, mask: torch.Tensor, buckets: int
) -> torch.Tensor:
    """Bucket of each behavior's age at the impression, on a log2 scale of minutes.

    Bucket 0 is PAD; a real behavior `g` minutes old goes to 1 + floor(log2(1 + g)), capped at
    `buckets − 1`. With 24 buckets the scale reaches past 10 years, so nothing real is capped.

    Shapes: ts (B,), hist_ts (B, L), mask (B, L) bool → (B, L) int64.
    """
    minutes = ((ts.unsqueeze(1) - hist_ts).clamp(min=0) // MINUTE_MS).float()
    bucket = (torch.log2(minutes + 1).floor().long() + 1).clamp(max=buckets - 1)
    return torch.where(mask, bucket, PAD)


class TimeGapEmbedding(nn.Module):
    """Embedding of `time_gap_buckets` (BST's time-based positions, SIM's time information).

    Args:
        dim: output size.
        buckets: number of buckets, PAD included.

    Shapes: ts (B,), hist_ts (B, L), mask (B, L) → (B, L, dim); zero at PAD positions.
    """

    def __init__(self, dim: int, buckets: int = 24) -> None:
        super().__init__()
        if buckets < 2:
            raise ValueError(f"time-gap buckets = {buckets}: must be >= 2 (PAD plus one)")
        self.buckets = buckets
        self.table = nn.Embedding(buckets, dim, padding_idx=PAD)
        nn.init.normal_(self.table.weight, std=1e-2)
        with torch.no_grad():
            self.table.weight[PAD].zero_()

    def forward(self, ts: torch.Tensor, hist_ts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.table(time_gap_buckets(ts, hist_ts, mask, self.buckets))
