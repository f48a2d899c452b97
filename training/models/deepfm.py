"""DeepFM (Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction",
IJCAI 2017, arXiv:1703.04247)."""

from __future__ import annotations

import torch

from training.batch import Batch
from training.layers import MLP, Embedding, batch_embedding_l2
from training.layers.hparams import layer_sizes
from training.models.base import ModelSpec
from training.models.sequence import BehaviorSequenceModel, DenseOptions

FIELDS = ("user", "item", "category", "history_items", "history_categories")


class DeepFMOptions(DenseOptions):
    """DeepFM has no options of its own: every hparam it reads is a ModelConfig field."""


class DeepFM(BehaviorSequenceModel):
    """DeepFM: an FM component and a DNN component share the field embeddings; their logits are
    summed (Guo et al. 2017, eq. 1: ŷ = sigmoid(y_FM + y_DNN)).

    Notation: B batch, L history length, D embedding_dim, F = 5 fields: user, item, category and
    the history as two multi-valued fields (its items and its categories), each the mean of its
    real behaviors' embeddings (zero for an empty history), as multi-valued fields are usually
    pooled (x_j = 1/n for each of the n values).

        fields   V           (B, F, D)
        first    w_0 + Σ_j w_j x_j        one weight per id; the history fields with the same 1/n
        FM       Σ_{i<j} <v_i, v_j> = ½ Σ_d [(Σ_i v_id)² − Σ_i v_id²]     O(F·D), not O(F²·D)
        DNN      MLP(flatten(V)) with ReLU → (B,)
        logit = first + FM + DNN + position bias

    Treating the pooled history as one field leaves out the interactions among behaviors of the
    same history (a plain FM over the multi-hot bag would include them); the candidate × history
    interactions, the ones that matter for ranking, are all there.

    Hparams: embedding_dim, seq_len, mlp_hidden, embedding_l2 (also covers the first-order rows a
    batch reads) and dense (item_dense joins the DNN input unless "off").
    """

    Options = DeepFMOptions

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hp, dim, vocab = spec.hparams, self.dim, spec.vocab_sizes
        self.first_user = Embedding(vocab["user"], 1)
        self.first_item = Embedding(vocab["item"], 1)
        self.first_category = Embedding(vocab["category"], 1)
        self.bias = torch.nn.Parameter(torch.zeros(()))
        width = len(FIELDS) * dim + self.enable_dense()
        self.mlp = MLP(width, layer_sizes(hp, "mlp_hidden"), activation="relu", out_dim=1)

    def first_order(self, batch: Batch, share: torch.Tensor) -> torch.Tensor:
        """w_0 + Σ_j w_j x_j (B,); `share` (B, L) is each behavior's 1/n (0 at PAD)."""
        item, hist_item = self.first_item.lookup(batch["item"], batch["hist_item"])  # (B, 1), (B, L, 1)
        category, hist_category = self.first_category.lookup(batch["category"], batch["hist_category"])
        history = ((hist_item + hist_category).squeeze(-1) * share).sum(1)  # (B,)
        user = self.first_user(batch["user"])  # (B, 1)
        return self.bias + (user + item + category).squeeze(1) + history

    @staticmethod
    def fm(fields: torch.Tensor) -> torch.Tensor:
        """Second-order FM term: (B, F, D) → (B,), Σ_{i<j} <v_i, v_j> by the square-of-sum identity."""
        square_of_sum = fields.sum(dim=1).square()  # (B, D)
        sum_of_squares = fields.square().sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (B,) for a batch holding `required_inputs` (see training.models.base)."""
        dim = self.dim
        user = self.embeddings.user(batch)  # (B, D)
        target, history, mask = self.embeddings.target_and_history(batch)  # (B, 2D), (B, L, 2D), (B, L)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(history.dtype)  # (B, 1)
        share = mask.to(history.dtype) / count  # (B, L)
        pooled = torch.bmm(share.unsqueeze(1), history).squeeze(1)  # (B, 2D), mean of real behaviors
        fields = torch.stack(
            [user, target[:, :dim], target[:, dim:], pooled[:, :dim], pooled[:, dim:]], dim=1
        )  # (B, F, D)
        deep = self.mlp(self.with_dense(batch, fields.flatten(1))).squeeze(1)
        return self.first_order(batch, share) + self.fm(fields) + deep + self.position_logit(batch)

    def regularization(self, batch: Batch) -> torch.Tensor:
        """embedding_l2 · (Σ ||w||² over the embedding rows and first-order weights this batch reads)."""
        if self.l2 == 0.0:
            return super().regularization(batch)
        first = [
            (self.first_user, batch["user"]),
            (self.first_item, batch["item"]),
            (self.first_item, batch["hist_item"]),
            (self.first_category, batch["category"]),
            (self.first_category, batch["hist_category"]),
        ]
        return super().regularization(batch) + self.l2 * batch_embedding_l2(first)
