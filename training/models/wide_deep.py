"""Wide & Deep (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016, arXiv:1606.07792)."""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt

from seqrank.schema import PAD
from training.batch import Batch
from training.layers import MLP, Embedding, batch_embedding_l2
from training.layers.hparams import layer_sizes
from training.models.base import ModelSpec
from training.models.sequence import BehaviorSequenceModel, DenseOptions


def cross_rows(left: torch.Tensor, right: torch.Tensor, right_size: int, buckets: int) -> torch.Tensor:
    """Row of each (left, right) id pair in a cross table of 1 + `buckets` rows: 1 + (left ·
    right_size + right) mod buckets, exact (no collisions) while the product of the two vocabularies
    fits in `buckets`, hashed beyond; PAD (0) when either id is PAD. Broadcasts like `*`."""
    rows = (left * right_size + right) % buckets + 1
    return torch.where((left == PAD) | (right == PAD), PAD, rows)


def distinct_per_row(rows: torch.Tensor) -> torch.Tensor:
    """`rows` (B, L) with repeats within a row set to PAD: a bag becomes a multi-hot set."""
    ordered, _ = rows.sort(dim=1)
    repeat = torch.zeros_like(ordered, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return ordered.masked_fill(repeat, PAD)


class WideDeepOptions(DenseOptions):
    cross_buckets: PositiveInt = Field(100_000, description="C, hashed rows of each cross-product table")


class WideDeep(BehaviorSequenceModel):
    """Wide & Deep: a linear model over sparse ids and their crosses (memorization) trained jointly
    with an Embedding&MLP (generalization); the two logits are summed (Cheng et al. 2016, eq. 3).

    Notation: B batch, L history length, D embedding_dim, C cross_buckets.

    Wide part, one weight per feature (1-dim tables, PAD weight 0):
        ids           w_user[u] + w_item[i] + w_category[c]
        user×category w_uc[u × c]                 the user's affinity to the candidate's category
        category × history categories, multi-hot   Σ_{c' ∈ set(hist_category)} w_cc[c × c']
        item × history items, multi-hot            Σ_{i' ∈ set(hist_item)} w_ii[i × i']
    Crosses index their own table of C rows, exactly while the vocabulary product fits in C and
    hashed beyond (`cross_rows`); each distinct history id counts once (a multi-hot bag, as the
    paper's cross-product transformation of binary features), PAD positions count nothing.

    Deep part, as emb_mlp: MLP([user (D), Σ_l history_l (2D), target (2D)]) with ReLU (the paper's).
    Logit = wide + deep + position bias.

    The paper trains the wide part with FTRL + L1 and the deep part with AdaGrad; here one optimizer
    (the trainer's Adam) trains both, and the mini-batch aware L2 covers the wide rows a batch
    reads as well as the embeddings.

    Hparams: embedding_dim, seq_len, mlp_hidden, embedding_l2, dense (item_dense joins the MLP
    input unless "off"), and the option cross_buckets (C, default 100,000).
    """

    Options = WideDeepOptions
    options: WideDeepOptions

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hp, dim, vocab = spec.hparams, self.dim, spec.vocab_sizes
        self.cross_buckets = self.options.cross_buckets
        self.wide_user = Embedding(vocab["user"], 1)
        self.wide_item = Embedding(vocab["item"], 1)
        self.wide_category = Embedding(vocab["category"], 1)
        self.wide_user_category = Embedding(self.cross_buckets + 1, 1)
        self.wide_category_history = Embedding(self.cross_buckets + 1, 1)
        self.wide_item_history = Embedding(self.cross_buckets + 1, 1)
        self.wide_bias = torch.nn.Parameter(torch.zeros(()))
        self.mlp = MLP(
            5 * dim + self.enable_dense(), layer_sizes(hp, "mlp_hidden"), activation="relu", out_dim=1
        )

    def _wide_rows(self, batch: Batch, multi_hot: bool = True) -> list[tuple[Embedding, torch.Tensor]]:
        """(table, rows) of every wide feature: ids (B,), crosses (B,) or (B, L); `multi_hot` drops
        repeats within a history (the L2 counts each row once anyway, so it skips that sort)."""
        vocab, buckets = self.spec.vocab_sizes, self.cross_buckets
        user, item, category = batch["user"], batch["item"], batch["category"]
        bag = distinct_per_row if multi_hot else (lambda rows: rows)
        return [
            (self.wide_user, user),
            (self.wide_item, item),
            (self.wide_category, category),
            (self.wide_user_category, cross_rows(user, category, vocab["category"], buckets)),
            (
                self.wide_category_history,
                bag(cross_rows(category.unsqueeze(1), batch["hist_category"], vocab["category"], buckets)),
            ),
            (
                self.wide_item_history,
                bag(cross_rows(item.unsqueeze(1), batch["hist_item"], vocab["item"], buckets)),
            ),
        ]

    def wide(self, batch: Batch) -> torch.Tensor:
        """The wide logit (B,)."""
        logit = self.wide_bias.expand(batch["item"].shape[0])
        for table, rows in self._wide_rows(batch):
            weights = table(rows)  # (B, 1) or (B, L, 1)
            logit = logit + weights.reshape(weights.shape[0], -1).sum(1)
        return logit

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (B,) for a batch holding `required_inputs` (see training.models.base)."""
        user = self.embeddings.user(batch)  # (B, D)
        target, history, _ = self.embeddings.target_and_history(batch)  # (B, 2D), (B, L, 2D)
        pooled = history.sum(dim=1)  # (B, 2D); PAD rows are zero
        features = self.with_dense(batch, torch.cat([user, pooled, target], dim=1))  # (B, 5D [+ dense])
        deep = self.mlp(features).squeeze(1)
        return self.wide(batch) + deep + self.position_logit(batch)

    def regularization(self, batch: Batch) -> torch.Tensor:
        """embedding_l2 · (Σ ||w||² over the embedding rows and the wide rows this batch reads)."""
        if self.l2 == 0.0:
            return super().regularization(batch)
        # The wide tables are unhashed, so their rows are the ids batch_embedding_l2 expects.
        return super().regularization(batch) + self.l2 * batch_embedding_l2(
            self._wide_rows(batch, multi_hot=False)
        )
