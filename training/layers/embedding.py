"""Embedding tables for dense-index features, with PAD kept at zero and optional hashing."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from seqrank.schema import PAD
from training.layers.regularization import batch_embedding_l2


class Embedding(nn.Module):
    """An embedding table whose PAD row (index 0) stays zero, so padded history positions add nothing.

    Args:
        vocab_size: rows the vocabulary needs, PAD included (max index + 1).
        dim: D, the embedding size.
        buckets: when given and smaller than `vocab_size`, ids share `buckets` rows: id → 1 + (id − 1)
            mod (buckets − 1), PAD stays 0. Bounds memory for huge vocabularies at the cost of
            collisions.
        init_std: standard deviation of the normal initialisation.

    Shapes: ids (...) int64 → (..., D).
    """

    def __init__(self, vocab_size: int, dim: int, buckets: int | None = None, init_std: float = 1e-2) -> None:
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size = {vocab_size}: must be >= 1 (index 0 is PAD)")
        if dim <= 0:
            raise ValueError(f"embedding dim = {dim}: must be > 0")
        if buckets is not None and buckets < 2:
            raise ValueError(f"buckets = {buckets}: must be >= 2 (PAD plus at least one shared row)")
        self.vocab_size = vocab_size
        self.buckets = buckets if buckets is not None and buckets < vocab_size else None
        rows = self.buckets or vocab_size
        self.weight = nn.Parameter(torch.empty(rows, dim))
        nn.init.normal_(self.weight, std=init_std)
        with torch.no_grad():
            self.weight[PAD].zero_()

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The table rows `ids` read (the ids themselves unless hashed)."""
        if self.buckets is None:
            return ids
        return torch.where(ids > PAD, (ids - 1) % (self.buckets - 1) + 1, ids)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.rows(ids)
        if self.weight.device.type == "cpu":
            return _GatherRows.apply(self.weight, rows)
        # padding_idx keeps the PAD row's gradient at zero, so it stays a true zero vector.
        return nn.functional.embedding(rows, self.weight, padding_idx=PAD)

    def lookup(self, *ids: torch.Tensor) -> list[torch.Tensor]:
        """Embed several id tensors with one gather, so the table's gradient is built once."""
        flat = torch.cat([i.reshape(-1) for i in ids])
        vectors = self(flat)  # (sum of sizes, D)
        return [
            v.view(*i.shape, self.dim)
            for v, i in zip(vectors.split([i.numel() for i in ids]), ids, strict=True)
        ]


class _GatherRows(torch.autograd.Function):
    """Row gather whose backward is one index_add_, PAD row zeroed.

    Same result as nn.functional.embedding with padding_idx, whose CPU backward
    (embedding_dense_backward) measured 2.5-5x slower here for the (B·L) ids of a history batch.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows = weight.shape[0]
        return weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ids,) = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        grad_weight = flat.new_zeros(ctx.rows, flat.shape[1]).index_add_(0, ids.reshape(-1), flat)
        grad_weight[PAD] = 0
        return grad_weight, None


# The table each id batch key reads (training.models.base documents the keys).
ID_KEY_TABLE = {
    "user": "user",
    "item": "item",
    "category": "category",
    "hist_item": "item",
    "hist_category": "category",
    "long_item": "item",
    "long_category": "category",
    "cat_item": "item",
}


class BehaviorEmbeddings(nn.Module):
    """The user, item and category tables most sequence models share, and the lookups they need.

    An item — the candidate or a past behavior — is represented by its item and category
    embeddings concatenated (2D), one table each shared between candidate and history, as in DIN.

    Args:
        vocab_sizes: rows per entity (PAD included); needs "user", "item" and "category".
        dim: D.

    Shapes: user (B, D); target (B, 2D); history (B, L, 2D) with mask (B, L), True = real behavior.
    Batches hold the keys of `training.models.base.Batch`.
    """

    def __init__(self, vocab_sizes: dict[str, int], dim: int) -> None:
        super().__init__()
        missing = [e for e in ("user", "item", "category") if e not in vocab_sizes]
        if missing:
            raise ValueError(f"vocab_sizes lacks {missing}; got {sorted(vocab_sizes)}")
        self.user_table = Embedding(vocab_sizes["user"], dim)
        self.item_table = Embedding(vocab_sizes["item"], dim)
        self.category_table = Embedding(vocab_sizes["category"], dim)
        self.dim = dim

    def user(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.user_table(batch["user"])  # (B, D)

    def target_and_history(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidate, history and history mask: (B, 2D), (B, L, 2D), (B, L); one gather per table."""
        item, hist_item = self.item_table.lookup(batch["item"], batch["hist_item"])
        category, hist_category = self.category_table.lookup(batch["category"], batch["hist_category"])
        target = torch.cat([item, category], dim=-1)
        keys = torch.cat([hist_item, hist_category], dim=-1)
        return target, keys, batch["hist_item"] != PAD

    def batch_l2(self, batch: dict[str, torch.Tensor], keys: Iterable[str] | None = None) -> torch.Tensor:
        """Squared L2 of the rows this batch reads (mini-batch aware regularization).

        `keys` are the id keys the model reads (user, item, category and the hist_/long_/cat_ id
        keys); default: user, item, category, hist_item, hist_category.
        """
        tables = {"user": self.user_table, "item": self.item_table, "category": self.category_table}
        wanted = keys if keys is not None else ("user", "item", "category", "hist_item", "hist_category")
        pairs = [(tables[ID_KEY_TABLE[key]], batch[key]) for key in wanted if key in ID_KEY_TABLE]
        return batch_embedding_l2(pairs)
