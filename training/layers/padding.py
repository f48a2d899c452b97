"""Trimming the PAD columns of a batch's sequences, where the width may depend on the data.

Histories are right-aligned, so columns that are PAD in every row of a batch change nothing the
models compute (masked keys, dropped outputs); cutting them saves most of the work on batches of
short histories. The cut width is read back from the tensor, which torch.compile can only trace
as a graph break and a recompilation per new width, so under compilation nothing is cut: the
compiled graph keeps the full width and the masks do the rest.
"""

from __future__ import annotations

import torch


def leading_pad_columns(real: torch.Tensor, keep: int = 1) -> int:
    """How many leading columns of `real` (B, L) bool (True = real entry) are False in every row,
    capped so that at least `keep` columns remain; 0 while torch.compile traces."""
    width = real.shape[1]
    if torch.compiler.is_compiling():
        return 0
    any_real = real.any(dim=0)  # (L,)
    first = int(any_real.int().argmax()) if bool(any_real.any()) else width
    return max(min(first, width - keep), 0)


def longest_row(mask: torch.Tensor) -> int:
    """The most real entries in any row of `mask` (B, L) bool, at least 1; L while torch.compile
    traces."""
    if torch.compiler.is_compiling():
        return mask.shape[1]
    return max(int(mask.sum(dim=1).max()), 1) if mask.numel() else 1
