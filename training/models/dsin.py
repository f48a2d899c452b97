"""DSIN: Deep Session Interest Network (Feng et al., IJCAI 2019, arXiv:1905.06482)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from seqrank.schema import PAD
from training.batch import Batch
from training.layers.attention import TargetAttention
from training.layers.hparams import layer_sizes, positive_int
from training.layers.mlp import MLP
from training.layers.session import SessionBiasEncoding, Sessions, split_sessions
from training.models.base import ModelSpec
from training.models.sequence import BehaviorSequenceModel, DenseOptions

MINUTE_MS = 60_000


class SessionInterestExtractor(nn.Module):
    """Multi-head self-attention inside each session, then average pooling (DSIN section 4.2).

    One Transformer encoder layer, shared by all sessions: multi-head self-attention over the
    session's behaviors (PAD keys masked), residual and layer norm, a ReLU feed-forward layer,
    residual and layer norm; the session interest I_k is the mean of its outputs over the real
    behaviors. A session without behaviors lets its (PAD) queries attend to every slot, which
    keeps the softmax finite; its interest is then set to zero.

    Notation: B batch, S sessions, T behaviors per session, E model size, h heads.

    Shapes: x (B, S, T, E), mask (B, S, T) bool → interests (B, S, E).
    """

    def __init__(self, dim: int, heads: int, ffn_hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(dim, 3 * dim)  # W^Q, W^K, W^V of all heads
        self.out_proj = nn.Linear(dim, dim)  # W^O
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_hidden), nn.ReLU(), nn.Linear(ffn_hidden, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, sessions, length, dim = x.shape
        rows = x.reshape(batch * sessions, length, dim)  # (B·S, T, E)
        q, k, v = (
            part.view(batch * sessions, length, self.heads, dim // self.heads).transpose(1, 2)
            for part in self.in_proj(rows).chunk(3, dim=-1)
        )  # each (B·S, h, T, E/h)
        real = mask.reshape(batch * sessions, length)
        empty = ~real.any(dim=1, keepdim=True)
        keys_seen = (real | empty)[:, None, None, :]  # (B·S, 1, 1, T), True = attend
        attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keys_seen)
        attended = attended.transpose(1, 2).reshape(batch * sessions, length, dim)
        hidden = self.norm1(rows + self.out_proj(attended))
        hidden = self.norm2(hidden + self.ffn(hidden))  # (B·S, T, E)
        weights = real.to(hidden.dtype).unsqueeze(2)  # (B·S, T, 1)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B·S, E)
        return pooled.view(batch, sessions, dim)


class SessionInterestInteracting(nn.Module):
    """Bi-LSTM over the sessions, empty sessions excluded (DSIN section 4.3): H_k = [→h_k, ←h_k].

    Sessions are right-aligned (empty ones on the left); each row's real sessions are moved to
    the front, packed, run through the LSTM in both directions and moved back, so neither
    direction ever reads an empty session. Rows without any session get zeros.

    Shapes: interests (B, S, E), session_mask (B, S) bool → (B, S, 2·hidden).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)

    def forward(self, interests: torch.Tensor, session_mask: torch.Tensor) -> torch.Tensor:
        sessions = interests.shape[1]
        counts = session_mask.sum(dim=1)  # (B,)
        slot = torch.arange(sessions, device=interests.device)
        # Real sessions occupy slots S − n .. S − 1; rolling each row by n puts them at 0 .. n − 1.
        to_front = (slot + sessions - counts.unsqueeze(1)) % sessions  # (B, S)
        front = interests.gather(1, to_front.unsqueeze(2).expand_as(interests))
        packed = nn.utils.rnn.pack_padded_sequence(
            front, counts.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        output, _ = self.lstm(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=sessions)
        back = (slot + counts.unsqueeze(1)) % sessions  # (B, S): undo the roll
        evolved = output.gather(1, back.unsqueeze(2).expand(-1, -1, output.shape[2]))
        return evolved * session_mask.unsqueeze(2).to(evolved.dtype)


class BilinearAttention(nn.Module):
    """The candidate's softmax attention over the sessions (DSIN section 4.4, eq. 7 and 8):
    a_k = softmax_k(K_k W X^I), U = Σ_k a_k K_k over the sessions that have behaviors.

    Shapes: query (B, Q), keys (B, S, E), mask (B, S) bool → (B, E); zeros for a row without
    sessions.
    """

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(key_dim, query_dim))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(key_dim))

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = torch.bmm(keys, (query @ self.weight.t()).unsqueeze(2)).squeeze(2)  # (B, S)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1) * mask.to(scores.dtype)
        return torch.bmm(weights.unsqueeze(1), keys).squeeze(1)


class DSINOptions(DenseOptions):
    session_gap_minutes: PositiveFloat = Field(
        30.0, description="a longer gap starts a session (ingest's rule)"
    )
    max_sessions: PositiveInt = Field(5, description="S, the latest sessions kept")
    session_len: PositiveInt = Field(10, description="T, the latest behaviors kept per session")
    ffn_hidden: PositiveInt | None = Field(None, description="self-attention feed-forward size; None: 4E")
    session_attention: Literal["softmax", "din"] = Field(
        "softmax", description="softmax: the paper's bilinear scores; din: the DIN activation unit"
    )


class DSIN(BehaviorSequenceModel):
    """Deep Session Interest Network: interests per session, their evolution, and the candidate's
    attention over both (Feng et al., "Deep Session Interest Network for Click-Through Rate
    Prediction", IJCAI 2019).

    Notation: B batch, L history length (seq_len), S max_sessions, T session_len, D embedding_dim,
    E = 2D the behavior size ([item ⊕ category]), h heads.

        sessions   (B, S, T)      split of hist_* at gaps > session_gap_minutes (hist_ts); the
                                  latest S sessions, the latest T behaviors of each, right-aligned
        Q          (B, S, T, E)   behavior embeddings + bias encoding BE(k, t, c)
        I          (B, S, E)      session interests: self-attention in each session, mean-pooled
        H          (B, S, E)      Bi-LSTM over the non-empty sessions (D units each direction)
        U^I, U^H   (B, E)         the candidate's attention over I and over H
        MLP([user, U^I, U^H, target]) with Dice → logit (B,)

    The candidate's attention is the paper's softmax over bilinear scores by default
    (session_attention "softmax"), or the DIN activation unit (session_attention "din",
    attention_hidden sizes, no softmax).

    Hparams: embedding_dim, seq_len, heads (must divide E), attention_hidden (session_attention
    "din" only), mlp_hidden, embedding_l2, and model options:
        session_gap_minutes  a longer gap between two behaviors starts a session, default 30
                             (the ingest's session rule)
        max_sessions         S, default 5
        session_len          T, default 10
        ffn_hidden           the self-attention layer's feed-forward size, default 4E
        session_attention    "softmax" (default) or "din"
    """

    Options = DSINOptions
    options: DSINOptions
    required_inputs = ("user", "item", "category", "hist_item", "hist_category", "hist_ts")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        hp, dim, opts = spec.hparams, self.dim, self.options
        heads = positive_int(hp, "heads")
        if (2 * dim) % heads:
            raise ValueError(
                f"hparams['heads'] = {heads}: must divide the behavior size 2 · embedding_dim = {2 * dim}"
            )
        self.gap_ms = opts.session_gap_minutes * MINUTE_MS
        self.max_sessions = opts.max_sessions
        self.session_len = opts.session_len
        ffn_hidden = opts.ffn_hidden or 8 * dim
        attention = opts.session_attention

        self.bias_encoding = SessionBiasEncoding(self.max_sessions, self.session_len, 2 * dim)
        self.extractor = SessionInterestExtractor(2 * dim, heads, ffn_hidden)
        self.interacting = SessionInterestInteracting(2 * dim, dim)
        self.interest_attention: nn.Module
        self.evolved_attention: nn.Module
        if attention == "din":
            sizes = layer_sizes(hp, "attention_hidden")
            self.interest_attention = TargetAttention(2 * dim, sizes, activation="sigmoid")
            self.evolved_attention = TargetAttention(2 * dim, sizes, activation="sigmoid")
        else:
            self.interest_attention = BilinearAttention(2 * dim, 2 * dim)
            self.evolved_attention = BilinearAttention(2 * dim, 2 * dim)
        self.mlp = MLP(
            7 * dim + self.enable_dense(), layer_sizes(hp, "mlp_hidden"), activation="dice", out_dim=1
        )

    def sessions(self, batch: Batch) -> Sessions:
        """The session split of the batch's short history (see `split_sessions`)."""
        mask = batch["hist_item"] != PAD
        return split_sessions(batch["hist_ts"], mask, self.gap_ms, self.max_sessions, self.session_len)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (B,) for a batch holding `required_inputs` (see training.models.base)."""
        user = self.embeddings.user(batch)  # (B, D)
        sessions = self.sessions(batch)
        item, session_item = self.embeddings.item_table.lookup(
            batch["item"], sessions.gather(batch["hist_item"])
        )
        category, session_category = self.embeddings.category_table.lookup(
            batch["category"], sessions.gather(batch["hist_category"])
        )
        target = torch.cat([item, category], dim=1)  # (B, E)
        behaviors = self.bias_encoding(torch.cat([session_item, session_category], dim=-1))  # (B, S, T, E)

        session_mask = sessions.session_mask  # (B, S)
        interests = self.extractor(behaviors, sessions.mask)  # (B, S, E)
        evolved = self.interacting(interests, session_mask)  # (B, S, E)
        interest = self.interest_attention(target, interests, session_mask)  # (B, E)
        evolution = self.evolved_attention(target, evolved, session_mask)  # (B, E)
        features = torch.cat([user, interest, evolution, target], dim=1)  # (B, 7D)
        features = self.with_dense(batch, features)  # (B, 7D + dense width) when hparams dense is on
        return self.mlp(features).squeeze(1) + self.position_logit(batch)
