"""Embedding tables for dense-index features, with PAD kept at zero, optional hashing, and
frequency-based double hashing for vocabularies larger than the rows one wants to keep."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from seqrank.schema import PAD
from training.batch import KEY_ENTITY, Batch
from training.layers import fused
from training.layers.hparams import config_default, positive_int
from training.layers.regularization import batch_embedding_l2

EMBEDDINGS = ("full", "double_hash")


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
        if fused.gather_applies(self.weight):
            return fused.gather_rows(self.weight, rows)
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


# Two universal hash functions h(x) = ((a·x + b) mod P) mod m over the Mersenne prime P = 2^31 − 1.
# ids are reduced mod P first, so a·x stays below 2^62 and never overflows int64.
_HASH_PRIME = 2_147_483_647
_HASH_FIRST = (1_103_515_245, 12_345)
_HASH_SECOND = (2_013_265_921, 1_664_525)


def _universal_hash(ids: torch.Tensor, ab: tuple[int, int], buckets: int) -> torch.Tensor:
    a, b = ab
    return ((ids % _HASH_PRIME) * a + b) % _HASH_PRIME % buckets


class DoubleHashEmbedding(Embedding):
    """Frequency-based double hashing (Zhang et al., "Model Size Reduction Using Frequency Based
    Double Hashing for Recommender Systems", RecSys 2020).

    The `full_rows` most frequent ids keep a row of their own; every other id is the sum of two rows
    of a shared table of `hash_rows` rows, picked by two independent hash functions, so tail ids
    rarely share both rows with another id although the table is far smaller than the vocabulary.
    Which ids are frequent is fitted by `prepare` from the training data's id counts and kept in
    the `frequent` buffer (sorted ids, (full_rows,)), so saving and loading the weights keeps it;
    before `prepare`, ids 1..full_rows are the frequent ones.

    Weight layout (one table, so the CPU gather and the mini-batch L2 treat it like any other):
    row 0 PAD (zero), rows 1..F the full rows (F = min(full_rows, vocab_size − 1)), then H =
    hash_rows shared rows; when every id fits in the full rows there is no shared part.
    `rows(ids)` returns (..., 2) row pairs: [own row, PAD] for frequent ids, two distinct shared
    rows for the others, [PAD, PAD] for PAD. The second shared row is offset from the first by
    1 + h₂(id) mod (H − 1), as in open-addressing double hashing, so the two never coincide.

    Args:
        vocab_size: rows a plain table would need, PAD included.
        dim: D.
        full_rows: ids that keep their own row.
        hash_rows: H, shared rows for the other ids (>= 2).
        entity: the key of `id_counts` this table is fitted on ("user", "item", "category").
        init_std: standard deviation of the full rows; shared rows get init_std/√2 so that the
            sum of two has the same scale.

    Shapes: ids (...) int64 → (..., D).
    """

    frequent: torch.Tensor

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        full_rows: int,
        hash_rows: int,
        entity: str,
        init_std: float = 1e-2,
    ) -> None:
        # nn.Module's constructor, not Embedding's: that one would allocate a row per id.
        nn.Module.__init__(self)
        if vocab_size < 1:
            raise ValueError(f"vocab_size = {vocab_size}: must be >= 1 (index 0 is PAD)")
        if dim <= 0:
            raise ValueError(f"embedding dim = {dim}: must be > 0")
        if full_rows <= 0:
            raise ValueError(f"full_rows = {full_rows}: must be > 0")
        if hash_rows < 2:
            raise ValueError(f"hash_rows = {hash_rows}: must be >= 2 (two distinct rows per tail id)")
        self.vocab_size = vocab_size
        self.buckets = None
        self.entity = entity
        self.full_rows = min(full_rows, vocab_size - 1)
        self.hash_rows = hash_rows if self.full_rows < vocab_size - 1 else 0
        weight = torch.empty(1 + self.full_rows + self.hash_rows, dim)
        nn.init.normal_(weight[: 1 + self.full_rows], std=init_std)
        nn.init.normal_(weight[1 + self.full_rows :], std=init_std / 2**0.5)
        weight[PAD] = 0.0
        self.weight = nn.Parameter(weight)
        self.register_buffer("frequent", torch.arange(1, self.full_rows + 1, dtype=torch.int64))

    def prepare(self, id_counts: Mapping[str, np.ndarray]) -> None:
        """Keep own rows for the `full_rows` ids counted most often in `id_counts[entity]` (ties: the
        smaller id); PAD never counts. Counts past the vocabulary are ignored."""
        counts = np.asarray(id_counts[self.entity])[: self.vocab_size].astype(np.int64, copy=True)
        if len(counts) < self.vocab_size:
            counts = np.concatenate([counts, np.zeros(self.vocab_size - len(counts), np.int64)])
        counts[PAD] = -1
        top = np.argsort(-counts, kind="stable")[: self.full_rows]
        with torch.no_grad():
            self.frequent.copy_(torch.from_numpy(np.sort(top)))

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The two table rows each id reads: (...) → (..., 2); see the class docstring."""
        if self.full_rows == 0:
            return torch.zeros((*ids.shape, 2), dtype=ids.dtype, device=ids.device)
        position = torch.searchsorted(self.frequent, ids.contiguous()).clamp(max=self.full_rows - 1)
        is_frequent = self.frequent[position] == ids
        own = torch.stack([position + 1, torch.zeros_like(ids)], dim=-1)
        if self.hash_rows == 0:
            return torch.where(is_frequent.unsqueeze(-1), own, PAD)
        first = _universal_hash(ids, _HASH_FIRST, self.hash_rows)
        second = (first + 1 + _universal_hash(ids, _HASH_SECOND, self.hash_rows - 1)) % self.hash_rows
        shared = torch.stack([first, second], dim=-1) + (1 + self.full_rows)
        rows = torch.where(is_frequent.unsqueeze(-1), own, shared)
        return torch.where((ids == PAD).unsqueeze(-1), PAD, rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).sum(dim=-2)  # (..., 2, D) → (..., D); the sum of the two rows


def make_embedding(
    vocab_size: int, dim: int, entity: str, hparams: Mapping[str, Any] | None = None
) -> Embedding:
    """The id table hparams `embedding` asks for: "full" (default) a row per id, "double_hash" a
    `DoubleHashEmbedding` with hparams full_rows and hash_rows (ModelConfig's defaults when absent)."""
    hp = hparams or {}
    kind = hp.get("embedding", config_default("embedding"))
    if kind == "full":
        return Embedding(vocab_size, dim)
    if kind == "double_hash":
        full_rows = positive_int(hp, "full_rows", config_default("full_rows"))
        hash_rows = positive_int(hp, "hash_rows", config_default("hash_rows"))
        if hash_rows < 2:
            raise ValueError(f"hparams['hash_rows'] = {hash_rows}: must be >= 2")
        return DoubleHashEmbedding(vocab_size, dim, full_rows, hash_rows, entity)
    raise ValueError(f"hparams['embedding'] = {kind!r}: expected one of {', '.join(EMBEDDINGS)}")


class BehaviorEmbeddings(nn.Module):
    """The user, item and category tables most sequence models share, and the lookups they need.

    An item — the candidate or a past behavior — is represented by its item and category
    embeddings concatenated (2D), one table each shared between candidate and history, as in DIN.

    Args:
        vocab_sizes: rows per entity (PAD included); needs "user", "item" and "category".
        dim: D.
        hparams: the model's hparams; `embedding` ("full" or "double_hash"), full_rows and
            hash_rows choose the tables (`make_embedding`). None: full tables.

    Shapes: user (B, D); target (B, 2D); history (B, L, 2D) with mask (B, L), True = real behavior.
    Batches hold the keys of the batch contract (training.batch).
    """

    def __init__(
        self, vocab_sizes: dict[str, int], dim: int, hparams: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        missing = [e for e in ("user", "item", "category") if e not in vocab_sizes]
        if missing:
            raise ValueError(f"vocab_sizes lacks {missing}; got {sorted(vocab_sizes)}")
        self.user_table = make_embedding(vocab_sizes["user"], dim, "user", hparams)
        self.item_table = make_embedding(vocab_sizes["item"], dim, "item", hparams)
        self.category_table = make_embedding(vocab_sizes["category"], dim, "category", hparams)
        self.dim = dim

    def user(self, batch: Batch) -> torch.Tensor:
        return self.user_table(batch["user"])  # (B, D)

    def target_and_history(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidate, history and history mask: (B, 2D), (B, L, 2D), (B, L); one gather per table."""
        item, hist_item = self.item_table.lookup(batch["item"], batch["hist_item"])
        category, hist_category = self.category_table.lookup(batch["category"], batch["hist_category"])
        target = torch.cat([item, category], dim=-1)
        keys = torch.cat([hist_item, hist_category], dim=-1)
        return target, keys, batch["hist_item"] != PAD

    def batch_l2(self, batch: Batch, keys: Iterable[str] | None = None) -> torch.Tensor:
        """Squared L2 of the rows this batch reads (mini-batch aware regularization).

        `keys` are the id keys the model reads (user, item, category and the hist_/long_/cat_ id
        keys); default: user, item, category, hist_item, hist_category.
        """
        tables = {"user": self.user_table, "item": self.item_table, "category": self.category_table}
        wanted = keys if keys is not None else ("user", "item", "category", "hist_item", "hist_category")
        pairs = [(tables[KEY_ENTITY[key]], batch[key]) for key in wanted if key in KEY_ENTITY]
        return batch_embedding_l2(pairs)
