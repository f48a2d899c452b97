"""MIMN's User Interest Center: an NTM memory with a GRU controller and the Memory Induction Unit."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from training.layers.padding import leading_pad_columns

_EPS = 1e-8  # floor of the norms in the cosine similarity


class MemoryState(NamedTuple):
    """Everything the memory carries from one behavior to the next (B rows, m slots, E size, H
    controller size). Advancing a state by new behaviors needs nothing else, which is what lets a
    server keep one state per user and update it as behaviors arrive (MIMN's UIC)."""

    controller: torch.Tensor  # (B, H) GRU controller state
    read: torch.Tensor  # (B, E) the last read vector, fed back to the controller
    memory: torch.Tensor  # (B, m, E) the NTM memory
    channels: torch.Tensor  # (B, m, E) MIU channel states
    write_total: torch.Tensor  # (B, m) Σ_t of the write weights, for the utilization terms
    steps: torch.Tensor  # (B,) real behaviors written so far (float)


class UserInterestMemory(nn.Module):
    """NTM memory fed by a behavior stream, with the Memory Induction Unit (MIU) beside it.

    MIMN (Pi et al., KDD 2019, "Practice on Long Sequential User Behavior Modeling for
    Click-Through Rate Prediction", arXiv:1905.09248, section 5; the NTM is Graves et al. 2014).
    Notation: B batch, N steps, E behavior and slot size, m slots, H controller size, k MIU top-k.
    At each real behavior e_t (B, E):

        h_t  = GRU([e_t, r_{t−1}], h_{t−1})                                      controller
        w(k, β, M)(i) = softmax_i(β · ½(cos(k, K_i) + cos(k, M(i))))              addressing
        w^r_t = w(k^r_t, β^r_t, M_{t−1});  r_t = Σ_i w^r_t(i) M_{t−1}(i)           read head
        w^w_t = w(k^w_t, β^w_t, M_{t−1}) ⊙ P_t, renormalized                       write head
        M_t  = M_{t−1} ⊙ (1 − w^w_t e^⊤_t) + w^w_t a^⊤_t                           erase, add
        S_t(i) = GRU([M_t(i), e_t], S_{t−1}(i)) for the k slots of largest w^r_t   MIU
        g_t  = g_{t−1} + w^w_t                                                     write totals

    Keys k (tanh), strengths β (1 + softplus), erase e (sigmoid) and add a (tanh) come from h_t
    through one linear layer. K are learned slot keys (as in the authors' released code), so
    slots stay addressable even while their contents are alike; M_0 is learned, h_0, r_0 and S_0
    are zero.

    Memory utilization regularization (section 5.2): writes crowd into a few slots unless
    rebalanced. P_t = softmax(W_g u_{t−1}) reweighs the write weights by the share of the writes
    each slot has taken so far, u = g / steps (the paper leaves the product w^w_t P_t open; it is
    taken elementwise and renormalized here, W_g starts at zero so P_t starts uniform), and
    `utilization_loss` penalizes the spread of u over the slots.

    PAD steps leave every part of the state unchanged, so a right-aligned history can be read
    with its PAD on the left, and `advance(advance(s, x[:, :n]), x[:, n:])` equals
    `advance(s, x)`: the incremental update UIC serving relies on.

    Cost: the recurrence is sequential by nature, one step per behavior (skipping the leading
    columns that are PAD in every row); each step is two small GRU cells (B rows and B·k rows),
    a linear layer and a few (B, m, E) elementwise ops, forward and backward.

    Args:
        dim: E, the size of the behavior embeddings and of each slot.
        slots: m.
        controller_hidden: H.
        top_k: k, MIU channels updated per behavior (1 ≤ k ≤ m).

    Shapes: `advance(state, behaviors (B, N, E), mask (B, N) bool)` → state;
    `read(memory (B, m, E), key (B, E), strength (B,))` → (B, E).
    """

    def __init__(self, dim: int, slots: int, controller_hidden: int, top_k: int = 1) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("slots", slots), ("controller_hidden", controller_hidden)):
            if value <= 0:
                raise ValueError(f"memory {name} = {value}: must be > 0")
        if not 1 <= top_k <= slots:
            raise ValueError(f"memory top_k = {top_k}: must be between 1 and slots = {slots}")
        self.dim, self.slots, self.top_k = dim, slots, top_k
        self.memory_init = nn.Parameter(torch.empty(slots, dim).uniform_(-1.0, 1.0))
        self.slot_keys = nn.Parameter(torch.empty(slots, dim).uniform_(-1.0, 1.0))
        self.controller = nn.GRUCell(2 * dim, controller_hidden)
        # read key, read strength, write key, write strength, erase, add
        self.heads = nn.Linear(controller_hidden, 4 * dim + 2)
        self.rebalance = nn.Linear(slots, slots)  # W_g
        nn.init.zeros_(self.rebalance.weight)
        nn.init.zeros_(self.rebalance.bias)
        self.induction = nn.GRUCell(2 * dim, dim)

    def initial_state(self, batch: int) -> MemoryState:
        """The state before any behavior: learned memory, zero controller, read, channels, totals."""
        weight = self.memory_init
        zeros = weight.new_zeros
        return MemoryState(
            controller=zeros(batch, self.controller.hidden_size),
            read=zeros(batch, self.dim),
            memory=torch.tanh(weight).unsqueeze(0).expand(batch, -1, -1),
            channels=zeros(batch, self.slots, self.dim),
            write_total=zeros(batch, self.slots),
            steps=zeros(batch),
        )

    def address(self, keys: torch.Tensor, strengths: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Content-based weights over the slots for h heads at once.

        keys (B, h, E), strengths (B, h), memory (B, m, E) → (B, h, m), each row summing to 1.
        """
        slot_keys = nn.functional.normalize(torch.tanh(self.slot_keys), dim=-1)  # (m, E)
        key_norm = keys.norm(dim=-1, keepdim=True).clamp(min=_EPS)  # (B, h, 1)
        by_key = (keys @ slot_keys.t()) / key_norm  # (B, h, m)
        dots = torch.bmm(keys, memory.transpose(1, 2))  # (B, h, m)
        slot_norm = memory.norm(dim=-1).clamp(min=_EPS).unsqueeze(1)  # (B, 1, m)
        by_content = dots / (key_norm * slot_norm)
        return torch.softmax(strengths.unsqueeze(2) * 0.5 * (by_key + by_content), dim=2)

    def read(self, memory: torch.Tensor, key: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
        """Σ_i w(key, strength, M)(i) M(i): (B, m, E), (B, E), (B,) → (B, E)."""
        weights = self.address(key.unsqueeze(1), strength.unsqueeze(1), memory).squeeze(1)  # (B, m)
        return (weights.unsqueeze(2) * memory).sum(dim=1)

    def step(self, state: MemoryState, behavior: torch.Tensor, real: torch.Tensor) -> MemoryState:
        """Write one behavior (B, E) into the state; rows where `real` (B,) is False keep theirs."""
        dim = self.dim
        controller = self.controller(torch.cat([behavior, state.read], dim=1), state.controller)  # (B, H)
        params = self.heads(controller)  # (B, 4E + 2)
        keys = torch.tanh(params[:, : 2 * dim]).view(-1, 2, dim)  # read, write key (B, 2, E)
        erase = torch.sigmoid(params[:, 2 * dim : 3 * dim])  # (B, E)
        add = torch.tanh(params[:, 3 * dim : 4 * dim])  # (B, E)
        strengths = 1.0 + nn.functional.softplus(params[:, 4 * dim :])  # (B, 2)
        read_weights, write_weights = self.address(keys, strengths, state.memory).unbind(1)  # (B, m) each
        read = (read_weights.unsqueeze(2) * state.memory).sum(dim=1)  # (B, E)

        share = state.write_total / state.steps.clamp(min=1.0).unsqueeze(1)  # (B, m)
        balance = torch.softmax(self.rebalance(share), dim=1)  # P_t, (B, m)
        write_weights = write_weights * balance
        # PAD rows write with weight 0, which leaves their memory exactly as it was.
        keep = real.unsqueeze(1)  # (B, 1)
        write_weights = write_weights / write_weights.sum(dim=1, keepdim=True) * keep  # (B, m)
        # M ⊙ (1 − w eᵀ) + w aᵀ = M + w ⊙ (a − M ⊙ e), rows broadcast
        memory = torch.addcmul(
            state.memory, write_weights.unsqueeze(2), add.unsqueeze(1) - state.memory * erase.unsqueeze(1)
        )  # (B, m, E)

        # MIU: the k slots the read head looked at most feed their channels.
        if self.top_k == 1:
            top = read_weights.argmax(dim=1, keepdim=True)  # (B, 1)
        else:
            top = read_weights.topk(self.top_k, dim=1).indices  # (B, k)
        top = top.unsqueeze(2).expand(-1, -1, dim)  # (B, k, E)
        slot_content = memory.gather(1, top)  # (B, k, E)
        channel = state.channels.gather(1, top)  # (B, k, E)
        inputs = torch.cat([slot_content, behavior.unsqueeze(1).expand_as(slot_content)], dim=2)
        updated = self.induction(inputs.reshape(-1, 2 * dim), channel.reshape(-1, dim)).view_as(channel)
        updated = torch.where(keep.unsqueeze(2), updated, channel)
        return MemoryState(
            controller=torch.where(keep, controller, state.controller),
            read=torch.where(keep, read, state.read),
            memory=memory,
            channels=state.channels.scatter(1, top, updated),  # (B, m, E)
            write_total=state.write_total + write_weights,
            steps=state.steps + real.to(state.steps.dtype),
        )

    def advance(self, state: MemoryState, behaviors: torch.Tensor, mask: torch.Tensor) -> MemoryState:
        """Write behaviors (B, N, E) in order; mask (B, N) bool, False = PAD (left unchanged)."""
        if behaviors.shape[-1] != self.dim or mask.shape != behaviors.shape[:2]:
            raise ValueError(
                f"memory expects behaviors (B, N, {self.dim}) and mask (B, N); "
                f"got {tuple(behaviors.shape)} and {tuple(mask.shape)}"
            )
        # Columns that are PAD in every row would leave the state as it is: skip them (all of them
        # when nothing is real).
        first = leading_pad_columns(mask, keep=0)
        # unbind: one backward node for all steps; indexing step by step would make every step's
        # backward write a zero-filled (B, N, E) gradient.
        for behavior, real in zip(behaviors[:, first:].unbind(1), mask[:, first:].unbind(1), strict=True):
            state = self.step(state, behavior, real)
        return state

    def utilization_loss(self, state: MemoryState) -> torch.Tensor:
        """Spread of the write shares over the slots: mean over rows of Σ_i (u_i − 1/m)², u = g / steps.

        0 when every slot took the same share of the writes, (m − 1)/m when one slot took them all;
        rows without behaviors add 0.
        """
        written = state.steps > 0
        share = state.write_total / state.steps.clamp(min=1.0).unsqueeze(1)  # (B, m)
        spread = (share - 1.0 / self.slots).square().sum(dim=1)  # (B,)
        return (spread * written.to(spread.dtype)).mean()
