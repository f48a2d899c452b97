"""BST: Behavior Sequence Transformer (Chen et al., DLP-KDD 2019, arXiv:1905.06874)."""

from __future__ import annotations

import torch
from pydantic import Field, PositiveInt
from torch import nn

from seqrank.schema import PAD
from training.batch import Batch
from training.layers import MLP, leading_pad_columns
from training.layers.hparams import layer_sizes, positive_int
from training.layers.timegap import TimeGapEmbedding
from training.layers.transformer import TransformerEncoderLayer
from training.models.base import MlpActivation, ModelOptions, ModelSpec
from training.models.sequence import BehaviorSequenceModel


class BSTOptions(ModelOptions):
    blocks: PositiveInt = Field(1, description="transformer layers (1 is the paper's best)")
    position_dim: PositiveInt | None = Field(None, description="P; None: embedding_dim")
    ffn_hidden: PositiveInt | None = Field(None, description="feed-forward size; None: 4W")
    dropout: float = Field(0.1, ge=0, lt=1, description="on the two residual branches of each block")
    time_buckets: PositiveInt = Field(24, description="time-gap buckets, PAD included")
    mlp_activation: MlpActivation = Field("prelu", description="the paper uses LeakyReLU")


class BST(BehaviorSequenceModel):
    """Behavior Sequence Transformer: self-attention over the behaviors and the candidate, each
    tagged with how long before the impression it happened (Chen et al. 2019).

    Notation: B batch, L history length (hparams seq_len), D embedding_dim, P position_dim,
    W = 2D + P the transformer width, h heads.

        user       (B, D)
        tokens     (B, L + 1, 2D)    [item ⊕ category] of the behaviors, then the candidate last
                                     (history columns PAD in every row of the batch are cut first)
        position   (B, L + 1, P)     embedding of the time gap t(candidate) − t(v_i), bucketed on
                                     a log2 scale of minutes (the candidate's own gap is 0)
        x          (B, L + 1, W)     [tokens ⊕ position]: concatenated, as in the paper's fig. 1
        x = blocks × TransformerEncoderLayer(x), PAD keys masked
        at_target  (B, W)            the output at the candidate's position
        pooled     (B, W)            the mean of the outputs at the real behaviors (0 without any)
        MLP([user, at_target, pooled]) → logit (B,)

    Hparams: embedding_dim, seq_len, heads (must divide W), mlp_hidden, embedding_l2 (mini-batch
    aware L2, as in DIN), and options:
        blocks          transformer layers, default 1 (the paper's best)
        position_dim    P, default D
        ffn_hidden      feed-forward size, default 4W
        dropout         on the two residual branches of each block, default 0.1 (not on the
                        attention weights: see TransformerEncoderLayer; it costs ~10% of a CPU step)
        time_buckets    time-gap buckets, PAD included, default 24 (training.layers.timegap)
        mlp_activation  "prelu" (default; the paper uses LeakyReLU) or "dice", "relu", "sigmoid"
    """

    Options = BSTOptions
    options: BSTOptions
    required_inputs = ("user", "item", "category", "ts", "hist_item", "hist_category", "hist_ts")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hp, dim, opts = spec.hparams, self.dim, self.options
        heads = positive_int(hp, "heads")
        position_dim = opts.position_dim or dim
        width = 2 * dim + position_dim
        if width % heads:
            raise ValueError(
                f"hparams['heads'] = {heads}: must divide the transformer width 2·embedding_dim + "
                f"position_dim = {width}"
            )
        ffn_hidden = opts.ffn_hidden or 4 * width

        self.time_gap = TimeGapEmbedding(position_dim, opts.time_buckets)
        self.blocks = nn.ModuleList(
            TransformerEncoderLayer(width, heads, ffn_hidden, opts.dropout) for _ in range(opts.blocks)
        )
        self.mlp = MLP(
            dim + 2 * width, layer_sizes(hp, "mlp_hidden"), activation=opts.mlp_activation, out_dim=1
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (B,) for a batch holding `required_inputs` (see training.models.base)."""
        user = self.embeddings.user(batch)  # (B, D)
        # History columns that are PAD in every row change nothing (masked keys, dropped outputs):
        # cut them, so a batch of short histories does not pay for L² attention.
        first = leading_pad_columns(batch["hist_item"] != PAD)
        batch = {**batch, **{key: batch[key][:, first:] for key in ("hist_item", "hist_category", "hist_ts")}}
        target, history, mask = self.embeddings.target_and_history(batch)  # (B, 2D), (B, L', 2D), (B, L')
        # Zero the PAD steps: their category id may be set even where the item is PAD.
        history = history * mask.unsqueeze(-1).to(history.dtype)
        tokens = torch.cat([history, target.unsqueeze(1)], dim=1)  # (B, L + 1, 2D)
        ts = batch["ts"]
        seen = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)  # (B, L + 1); the candidate is real
        position = self.time_gap(ts, torch.cat([batch["hist_ts"], ts.unsqueeze(1)], dim=1), seen)
        x = torch.cat([tokens, position.to(tokens.dtype)], dim=-1)  # (B, L + 1, W)
        for block in self.blocks:
            x = block(x, ~seen)

        at_target = x[:, -1]  # (B, W)
        weights = mask.to(x.dtype) / mask.sum(dim=1, keepdim=True).clamp(min=1).to(x.dtype)  # (B, L)
        pooled = torch.bmm(weights.unsqueeze(1), x[:, :-1]).squeeze(1)  # (B, W)
        return self.mlp(torch.cat([user, at_target, pooled], dim=1)).squeeze(1) + self.position_logit(batch)
