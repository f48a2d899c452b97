"""Mini-batch aware L2 regularization of embedding tables (DIN, Zhou et al. 2018)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from seqrank.schema import PAD

if TYPE_CHECKING:
    from training.layers.embedding import Embedding


def batch_embedding_l2(pairs: Iterable[tuple[Embedding, torch.Tensor]]) -> torch.Tensor:
    """Sum of squared L2 norms of the embedding rows the batch reads, each row counted once.

    Full L2 over a table of millions of rows would touch every row every step; DIN's mini-batch
    aware regularizer only penalises the rows a batch uses. The paper additionally scales each row
    by 1/n_j (its frequency in the training data); we penalise used rows uniformly, which keeps the
    regularizer free of data statistics the model artifact would have to carry. PAD is excluded.

    Args:
        pairs: (table, ids) for every id tensor the batch looks up; several id tensors may share
            a table (target item and history items).

    Returns: a scalar tensor; multiply by the L2 weight.
    """
    by_table: dict[int, tuple[Embedding, list[torch.Tensor]]] = {}
    for table, ids in pairs:
        by_table.setdefault(id(table), (table, []))[1].append(table.rows(ids).reshape(-1))
    total: torch.Tensor | None = None
    for table, id_list in by_table.values():
        rows = table.weight.shape[0]
        # A count per row, not used[ids] = True: with more ids than rows (a category table) that
        # index_put makes the threads fight over the same few cache lines.
        used = torch.bincount(torch.cat(id_list), minlength=rows)[:rows] > 0
        used[PAD] = False
        term = _UsedRowsL2.apply(table.weight, used)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("batch_embedding_l2 needs at least one (table, ids) pair")
    return total


class _UsedRowsL2(torch.autograd.Function):
    """Σ ||w_r||² over the rows r with used[r]: (R, D), (R,) bool → scalar.

    Same value and gradient as weight[used].square().sum(), whose backward scatters into a zero
    table with a serial accumulating index_put; the gradient here, 2·g·w on used rows and 0
    elsewhere, is one parallel pass over the table, which the table's own gradient touches anyway.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight, used)
        rows = weight.index_select(0, used.nonzero().squeeze(1)).reshape(-1)
        return torch.dot(rows, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        weight, used = ctx.saved_tensors
        scale = used.to(weight.dtype).mul_(2 * grad)  # (R,)
        return weight * scale.unsqueeze(1), None
