"""Mini-batch aware L2 regularization of embedding tables (DIN, Zhou et al. 2018)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch

from seqrank.schema import PAD
from training.layers import fused


class RowTable(Protocol):
    """An embedding table as the regularizer sees it (training.layers.embedding.Embedding)."""

    @property
    def weight(self) -> torch.Tensor:
        """(R, D) rows, PAD at 0."""
        ...

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The table rows `ids` read (hashing or double hashing applied)."""
        ...


def batch_embedding_l2(pairs: Iterable[tuple[RowTable, torch.Tensor]]) -> torch.Tensor:
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
    by_table: dict[int, tuple[RowTable, list[torch.Tensor]]] = {}
    for table, ids in pairs:
        by_table.setdefault(id(table), (table, []))[1].append(table.rows(ids).reshape(-1))
    total: torch.Tensor | None = None
    for table, id_list in by_table.values():
        rows = table.weight.shape[0]
        # A count per row, not used[ids] = True: with more ids than rows (a category table) that
        # index_put makes the threads fight over the same few cache lines.
        used = torch.bincount(torch.cat(id_list), minlength=rows)[:rows] > 0
        used[PAD] = False
        term = fused.used_rows_l2(table.weight, used)  # weight[used].square().sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("batch_embedding_l2 needs at least one (table, ids) pair")
    return total
