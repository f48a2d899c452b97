"""SIM: Search-based Interest Model (Pi et al., CIKM 2020, arXiv:2006.05639)."""

from __future__ import annotations

from typing import Literal, overload

import torch
from pydantic import Field, NonNegativeFloat, PositiveInt
from torch import nn

from seqrank.schema import PAD
from training.batch import Batch
from training.layers import MLP, TargetAttention, leading_pad_columns
from training.layers.embedding import make_embedding
from training.layers.hparams import layer_sizes, positive_int
from training.layers.multihead import MultiHeadTargetAttention
from training.layers.regularization import batch_embedding_l2
from training.layers.timegap import TimeGapEmbedding
from training.models.base import ModelSpec
from training.models.sequence import BehaviorSequenceModel, DenseOptions

# The relevance is a product of two search embeddings: at the main tables' scale it and its
# gradient start near zero and the search space barely learns.
MAIN_INIT_STD, SEARCH_INIT_STD = 1e-2, 0.1


class SIMOptions(DenseOptions):
    search: Literal["hard", "soft"] = Field(
        "hard", description="the GSU: the category index (what the paper deployed) or top-K inner products"
    )
    search_dim: PositiveInt | None = Field(
        None, description="S, soft search embedding size; None: embedding_dim"
    )
    gsu_weight: NonNegativeFloat = Field(
        1.0, description="soft search: α of the paper's Loss = α Loss_GSU + β Loss_ESU"
    )
    time_buckets: int = Field(24, ge=2, description="time-gap buckets, PAD included")


class SIM(BehaviorSequenceModel):
    """Search-based User Interest Model: search the lifelong history, then attend over what was found.

    Two stages over the long history (Pi et al. 2020, fig. 2):

    - General Search Unit (GSU) picks K behaviors relevant to the candidate.
      hard search (option search="hard", the default; what the paper deployed): the user's latest
      K behaviors in the candidate's category. The batch carries them as cat_item / cat_ts, read
      from a user → category → behaviors index (training) or the Feast user_category_behavior
      view (serving); their category is the candidate's.
      soft search (search="soft"): the top K of the long history by the inner product
      r_l = (W_b s_l) · (W_a s_a) in a separate search embedding space (s = [item ⊕ category] of
      size 2S), PAD excluded. The indices carry no gradient; the search space is trained at the
      same time as the main model by the paper's soft-search sub-model and its own CTR loss
      (Loss = α Loss_GSU + β Loss_ESU, β = 1 here): U_r = Σ_l r_l s_l over the real behaviors
      (averaged here, so its scale does not grow with the history) feeds an MLP with s_a whose
      logit is scored against the click label. That loss, times α (option gsu_weight), is the
      model's auxiliary loss; the sub-model's logit is not part of the model's output.
    - Exact Search Unit (ESU): multi-head target attention of the candidate over the K retrieved
      behaviors, each the concatenation [item ⊕ category ⊕ time gap] of its embedding and the
      embedding of its age at the impression (log2-minute buckets); PAD masked, a row with
      nothing retrieved gets a zero interest.

    Beside them a short-term DIN activation unit over the last L behaviors (hist_*), and
    [user, ESU interest, short-term interest, target, log(1 + retrieved)] → MLP (Dice) → logit.
    The last term is an addition to the paper: the ESU's softmax keeps which retrieved behaviors
    matter but not how many there were, and for hard search that count (the user's behaviors in
    the candidate's category) is the intensity of a long-term interest.

    Notation: B batch, L seq_len, M long_seq_len, K search_k, D embedding_dim, h heads, S search_dim.

        user       (B, D)
        target     (B, 2D)          [item ⊕ category] of the candidate
        retrieved  (B, K, 3D)       [item ⊕ category ⊕ time gap] of the GSU's behaviors, PAD masked
        long_term  (B, h·3D)        ESU output
        short_term (B, 2D)          DIN attention over hist_*
        intensity  (B, 1)           log(1 + number of real retrieved behaviors)
        MLP([user, long_term, short_term, target, intensity]) → (B,)

    Hparams (ModelConfig fields): embedding_dim, seq_len, attention_hidden (DIN activation unit;
    also the GSU sub-model's hidden sizes), mlp_hidden, search_k, heads, long_seq_len (soft search
    only; the batch's M), embedding_l2 (mini-batch aware L2, also over the search tables).
    With hparams dense "normalized" or "autodis" the candidate's continuous features (item_dense)
    join the MLP input, as in DIN; hparams embedding (full or double_hash) applies to every table,
    the search tables included.
    Options (model.options): search ("hard" | "soft", default "hard"), search_dim (S, soft search
    embedding size, default embedding_dim), gsu_weight (α, soft search only, default 1.0),
    time_buckets (time-gap buckets incl. PAD, default 24).
    """

    Options = SIMOptions
    options: SIMOptions
    has_auxiliary_loss = True

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hp, dim, opts = spec.hparams, self.dim, self.options
        self.search = opts.search
        self.search_k = positive_int(hp, "search_k")
        heads = positive_int(hp, "heads")
        attention_hidden = layer_sizes(hp, "attention_hidden")

        self.time_gap = TimeGapEmbedding(dim, opts.time_buckets)
        self.exact_search = MultiHeadTargetAttention(2 * dim, 3 * dim, heads)
        self.short_attention = TargetAttention(2 * dim, attention_hidden, activation="sigmoid")
        self.mlp = MLP(
            dim + self.exact_search.out_dim + 4 * dim + 1 + self.enable_dense(),
            layer_sizes(hp, "mlp_hidden"),
            activation="dice",
            out_dim=1,
        )

        required = ["user", "item", "category", "ts", "hist_item", "hist_category"]
        if self.search == "soft":
            self.long_seq_len = positive_int(hp, "long_seq_len")
            search_dim = opts.search_dim or dim
            vocab = spec.vocab_sizes
            # Full or double-hashed like the main tables (hparams embedding), at a larger scale.
            self.search_item = make_embedding(vocab["item"], search_dim, "item", hp)
            self.search_category = make_embedding(vocab["category"], search_dim, "category", hp)
            with torch.no_grad():
                for table in (self.search_item, self.search_category):
                    table.weight.mul_(SEARCH_INIT_STD / MAIN_INIT_STD)
            self.search_target = nn.Linear(2 * search_dim, search_dim, bias=False)  # W_a
            self.search_behavior = nn.Linear(2 * search_dim, search_dim, bias=False)  # W_b
            self.search_head = MLP(4 * search_dim, attention_hidden, activation="prelu", out_dim=1)
            self.gsu_weight = opts.gsu_weight
            required += ["long_item", "long_category", "long_ts"]
        else:
            required += ["cat_item", "cat_ts"]
        # Per instance, as the keys depend on the search mode. (BehaviorSequenceModel's class tuple
        # narrows the attribute's type to its exact length for mypy.)
        self.required_inputs = tuple(required)

    # --- General Search Unit -------------------------------------------------------------------

    def _long_history(self, batch: Batch) -> tuple[dict[str, torch.Tensor], int]:
        """long_item, long_category, long_ts (B, M') without the leading columns that are PAD in
        every row, and how many columns were cut. Histories are right-aligned, so with M = 1000
        most batches have hundreds of such columns; at least min(K, M) columns stay."""
        item = batch["long_item"]
        cut = leading_pad_columns(item != PAD, keep=min(self.search_k, item.shape[1]))
        return {name: batch[f"long_{name}"][:, cut:] for name in ("item", "category", "ts")}, cut

    def _search_space(
        self, batch: Batch, long: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Soft search: candidate (B, 2S), long history (B', M', 2S) and its mask (B', M') in the
        search space, B' = 1 when every row holds the same history (serving expands one user's
        history over the candidates), so it is embedded once, else B."""
        long_item, long_category = long["item"], long["category"]
        if long_item.shape[0] > 1 and long_item.stride(0) == 0 and long_category.stride(0) == 0:
            long_item, long_category = long_item[:1], long_category[:1]
        item, long_item_emb = self.search_item.lookup(batch["item"], long_item)
        category, long_category_emb = self.search_category.lookup(batch["category"], long_category)
        mask = long_item != PAD
        behaviors = torch.cat([long_item_emb, long_category_emb], dim=-1)
        behaviors = behaviors * mask.unsqueeze(-1).to(behaviors.dtype)
        return torch.cat([item, category], dim=-1), behaviors, mask

    def _relevance(self, target: torch.Tensor, behaviors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # (W_b s_l) · (W_a s_a) = s_l · W_bᵀ (W_a s_a): one (2S) query per candidate instead of
        # projecting all M behaviors.
        query = self.search_behavior.weight.t().matmul(self.search_target(target).unsqueeze(-1))  # (B, 2S, 1)
        scores = torch.matmul(behaviors, query).squeeze(-1)  # (B, M); broadcasts a shared history
        return scores.masked_fill(~mask, float("-inf"))

    def _top_k(self, relevance: torch.Tensor, long_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(self.search_k, relevance.shape[1])
        index = relevance.detach().topk(k, dim=1).indices  # (B, K); no gradient through the choice
        return index, long_item.gather(1, index) != PAD

    def soft_search(
        self, batch: Batch, with_gsu_logit: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The GSU under soft search: the K most relevant behaviors as positions into the batch's
        long_* columns (B, K), in falling relevance; whether each is a real behavior (B, K), False
        where the history holds fewer than K; and with `with_gsu_logit` the GSU sub-model's logit
        (B,) (else None: only its loss reads it)."""
        long, cut = self._long_history(batch)
        target, behaviors, mask = self._search_space(batch, long)
        relevance = self._relevance(target, behaviors, mask)  # (B, M')
        index, found = self._top_k(relevance, long["item"])

        gsu_logit = None
        if with_gsu_logit:
            weights = relevance.masked_fill(~mask, 0.0)  # (B, M')
            count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(weights.dtype)
            pooled = torch.matmul(weights.unsqueeze(1), behaviors).squeeze(1) / count  # U_r (B, 2S)
            gsu_logit = self.search_head(torch.cat([pooled, target], dim=1)).squeeze(1)
        return index + cut, found, gsu_logit

    # --- Exact Search Unit and the rest ---------------------------------------------------------

    @overload
    def forward(self, batch: Batch) -> torch.Tensor: ...
    @overload
    def forward(self, batch: Batch, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def forward(
        self, batch: Batch, labels: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,) for a batch holding `required_inputs` (see training.models.base); with the
        click labels (training), (logits, the auxiliary loss): under soft search gsu_weight × the
        BCE of the GSU sub-model's logit against the labels, zero under hard search."""
        gsu_logit = None
        user = self.embeddings.user(batch)  # (B, D)
        target, history, hist_mask = self.embeddings.target_and_history(batch)  # (B, 2D), (B, L, 2D), (B, L)
        short_term = self.short_attention(target, history, hist_mask)  # (B, 2D)

        if self.search == "soft":
            with_gsu = labels is not None and self.gsu_weight != 0.0
            index, hit, gsu_logit = self.soft_search(batch, with_gsu)  # (B, K), (B, K), (B,) or None

            def take(name: str) -> torch.Tensor:
                return torch.where(hit, batch[f"long_{name}"].gather(1, index), PAD)  # (B, K)

            found_item, found_category, found_ts = take("item"), take("category"), take("ts")
        else:
            found_item, found_ts = batch["cat_item"], batch["cat_ts"]  # (B, K)
            # Every hard-search hit shares the candidate's category.
            found_category = torch.where(found_item != PAD, batch["category"].unsqueeze(1), PAD)
        found = found_item != PAD  # (B, K)
        item_emb = self.embeddings.item_table(found_item)  # (B, K, D)
        category_emb = self.embeddings.category_table(found_category)  # (B, K, D)
        gap = self.time_gap(batch["ts"], found_ts, found)  # (B, K, D); zero at PAD
        retrieved = torch.cat([item_emb, category_emb, gap], dim=-1)  # (B, K, 3D)
        long_term = self.exact_search(target, retrieved, found)  # (B, h·3D)

        # The softmax of the exact search keeps which behaviors matter, not how many were found;
        # the retrieval count carries that intensity (how often the user went to this category).
        intensity = torch.log1p(found.sum(dim=1, keepdim=True).to(long_term.dtype))  # (B, 1)
        features = torch.cat(
            [user, long_term, short_term, target, intensity], dim=1
        )  # (B, D + h·3D + 4D + 1)
        features = self.with_dense(batch, features)  # (B, ... + dense width) when hparams dense is on
        logits = self.mlp(features).squeeze(1) + self.position_logit(batch)
        if labels is None:
            return logits
        if gsu_logit is None:
            return logits, self.zero_loss()
        bce = nn.functional.binary_cross_entropy_with_logits(gsu_logit.float(), labels.float())
        return logits, self.gsu_weight * bce

    def regularization(self, batch: Batch) -> torch.Tensor:
        """Mini-batch aware L2 over the main tables, and under soft search the search tables' rows
        the batch reads (candidate and long history)."""
        total = super().regularization(batch)
        if self.search != "soft" or self.l2 == 0.0:
            return total
        search = batch_embedding_l2(
            [
                (self.search_item, batch["item"]),
                (self.search_item, batch["long_item"]),
                (self.search_category, batch["category"]),
                (self.search_category, batch["long_category"]),
            ]
        )
        return total + self.l2 * search
