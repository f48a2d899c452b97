"""DSIN's session blocks: splitting a right-aligned history into sessions, and the bias encoding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqrank.schema import PAD


@dataclass(frozen=True)
class Sessions:
    """Where each behavior of a history goes in the (B, S, T) session tensor.

    Notation: B batch, L history length, S sessions kept, T behaviors kept per session.

    `index[b, s, t]` is the history position (0..L−1) that fills slot (s, t) of row b, or L for an
    empty slot; `mask` is True where a slot holds a real behavior. Both sessions and the behaviors
    inside a session are right-aligned like the history: the latest session is s = S − 1, the
    latest behavior of a session t = T − 1, and empty slots sit on the left.
    """

    index: torch.Tensor  # (B, S, T) int64
    mask: torch.Tensor  # (B, S, T) bool

    def gather(self, values: torch.Tensor, fill: int = PAD) -> torch.Tensor:
        """The (B, S, T) session tensor of a (B, L) history tensor; empty slots hold `fill`."""
        batch, sessions, length = self.index.shape
        padded = torch.cat([values, values.new_full((batch, 1), fill)], dim=1)  # (B, L + 1)
        return padded.gather(1, self.index.view(batch, -1)).view(batch, sessions, length)

    @property
    def session_mask(self) -> torch.Tensor:
        """(B, S) bool: True for sessions with at least one behavior."""
        return self.mask.any(dim=2)


def split_sessions(
    hist_ts: torch.Tensor, mask: torch.Tensor, gap_ms: float, max_sessions: int, session_len: int
) -> Sessions:
    """Cut each history into sessions where two consecutive behaviors are more than `gap_ms` apart.

    DSIN (Feng et al., IJCAI 2019, "Deep Session Interest Network for Click-Through Rate
    Prediction", section 4.1, Session Division Layer) divides the behavior sequence into sessions
    at gaps longer than 30 minutes. The latest `max_sessions` sessions are kept, and of each the
    latest `session_len` behaviors. Vectorized: a session starts at each real behavior whose
    predecessor is PAD or more than `gap_ms` older; a cumulative sum of the starts numbers the
    sessions, a reversed cumulative minimum finds where each one ends, and one scatter writes
    every kept position into its (session, position) slot. No loop over rows or positions.

    Args:
        hist_ts: (B, L) epoch ms of the behaviors, right-aligned, ascending within a row.
        mask: (B, L) bool, True = real behavior (PAD only on the left).
        gap_ms: a gap strictly longer than this starts a new session.
        max_sessions: S.
        session_len: T.

    Returns: `Sessions` with index and mask (B, S, T).
    """
    if max_sessions <= 0 or session_len <= 0:
        raise ValueError(
            f"split_sessions: max_sessions = {max_sessions}, session_len = {session_len}: must be > 0"
        )
    batch, length = mask.shape
    position = torch.arange(length, device=mask.device).expand(batch, length)  # (B, L)
    previous_real = nn.functional.pad(mask[:, :-1], (1, 0), value=False)
    previous_ts = nn.functional.pad(hist_ts[:, :-1], (1, 0))
    starts = mask & (~previous_real | (hist_ts - previous_ts > gap_ms))  # (B, L)

    number = starts.long().cumsum(dim=1)  # 1 = the oldest session of the row
    from_latest = number[:, -1:] - number  # 0 = the latest session
    # Position of the next session start strictly after each position (L when none).
    start_at = torch.where(starts, position, length)
    next_start = start_at.flip(1).cummin(dim=1).values.flip(1)  # first start at or after l
    next_start = nn.functional.pad(next_start[:, 1:], (0, 1), value=length)
    from_end = next_start - 1 - position  # 0 = the latest behavior of its session

    keep = mask & (from_latest < max_sessions) & (from_end < session_len)
    slots = max_sessions * session_len
    slot = (max_sessions - 1 - from_latest) * session_len + (session_len - 1 - from_end)
    slot = torch.where(keep, slot, slots)  # the extra slot `slots` collects what is dropped
    index = torch.full((batch, slots + 1), length, dtype=torch.long, device=mask.device)
    index = index.scatter(1, slot, position)[:, :slots].view(batch, max_sessions, session_len)
    return Sessions(index=index, mask=index < length)


class SessionBiasEncoding(nn.Module):
    """DSIN's bias encoding (Feng et al. 2019, section 4.2, eq. 1), added to the session tensor.

        BE(k, t, c) = w^K_k + w^T_t + w^C_c

    w^K ∈ R^S is a bias per session slot, w^T ∈ R^T per position inside a session and w^C ∈ R^E
    per unit of the behavior embedding: the self-attention that follows is order-blind, so the
    bias tells it which session and which position inside a session a behavior came from. With
    right-aligned sessions (see `Sessions`) w^K_k encodes how recent session k is.

    Args:
        sessions: S.
        session_len: T.
        dim: E, the behavior embedding size.

    Shapes: x (B, S, T, E) → (B, S, T, E).
    """

    def __init__(self, sessions: int, session_len: int, dim: int) -> None:
        super().__init__()
        for name, value in (("sessions", sessions), ("session_len", session_len), ("dim", dim)):
            if value <= 0:
                raise ValueError(f"bias encoding {name} = {value}: must be > 0")
        self.session = nn.Parameter(torch.zeros(sessions))
        self.position = nn.Parameter(torch.zeros(session_len))
        self.unit = nn.Parameter(torch.zeros(dim))

    def encoding(self) -> torch.Tensor:
        """BE as a (S, T, E) tensor."""
        return self.session[:, None, None] + self.position[None, :, None] + self.unit[None, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (self.session.shape[0], self.position.shape[0], self.unit.shape[0]):
            raise ValueError(
                f"bias encoding expects (B, {self.session.shape[0]}, {self.position.shape[0]}, "
                f"{self.unit.shape[0]}); got {tuple(x.shape)}"
            )
        return x + self.encoding()
