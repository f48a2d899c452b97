"""Recurrent blocks of DIEN: left-aligning padded histories for a fused GRU, and the AUGRU."""

from __future__ import annotations

import math

import torch
from torch import nn


def left_align(mask: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather index that moves each row's real steps to the front, keeping their order.

    Histories are stored right-aligned (PAD on the left), so a recurrent layer reading them from
    the left would update its state on PAD steps before the first real one. Moved to the front,
    the real steps are read first and the PAD steps trail behind, where their outputs are masked:
    a plain, fused `nn.GRU` then gives every real step exactly the state a per-row loop would.
    Works for any mask, holes included (a stable sort of the PAD flags).

    Args:
        mask: (B, L) bool, True = real step.
        steps: keep only the first `steps` aligned positions (default L). Positions past the
            longest row are PAD in every row; dropping them saves the recurrent work on them.

    Returns:
        index (B, T) int64 for `gather_steps`, and the aligned mask (B, T), T = steps or L.
    """
    index = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    if steps is not None:
        index = index[:, :steps]
    return index, mask.gather(1, index)


def gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Steps of `x` in the order of `index`: (B, L, F), (B, T) → (B, T, F)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class AUGRU(nn.Module):
    """GRU with attentional update gate (Zhou et al., AAAI 2019, "Deep Interest Evolution Network
    for Click-Through Rate Prediction", eq. 6-7), DIEN's interest evolution layer.

    Notation: B batch, T steps, I input size, H hidden size, a_t ∈ [0, 1] the attention of step t.

        r_t = σ(W_r i_t + U_r h_{t−1} + b_r)                reset gate
        u_t = 1 − σ(W_z i_t + U_z h_{t−1} + b_z)            update gate
        h̃_t = tanh(W_n i_t + b_in + r_t ⊙ (U_n h_{t−1} + b_hn))
        h_t = (1 − a_t u_t) ⊙ h_{t−1} + a_t u_t ⊙ h̃_t

    The parameters have exactly `nn.GRUCell`'s layout (weight_ih (3H, I), weight_hh (3H, H),
    biases (3H,), gate order r, z, n) and u_t = 1 − z_t is PyTorch's update convention, so with
    a_t = 1 a step equals `nn.GRUCell` with the same weights, and with a_t = 0 the state is left
    exactly as it was: steps of zero attention (PAD) never change it.

    Cost: the input projections of all T steps are one matrix product; the time loop is inherent
    (h_t needs h_{t−1}) and costs one (B, H) × (H, 3H) product and a handful of elementwise ops
    per step, forward and backward.

    Args:
        input_size: I.
        hidden_size: H.

    Shapes: inputs (B, T, I), attention (B, T), h0 (B, H) or None (zeros) → final state (B, H).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"AUGRU sizes input={input_size}, hidden={hidden_size}: must be > 0")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)  # nn.GRUCell's initialisation
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(
        self, inputs: torch.Tensor, attention: torch.Tensor, h0: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, steps, size = inputs.shape
        if size != self.input_size or attention.shape != (batch, steps):
            raise ValueError(
                f"AUGRU expects inputs (B, T, {self.input_size}) and attention (B, T); "
                f"got {tuple(inputs.shape)} and {tuple(attention.shape)}"
            )
        hidden = self.hidden_size
        # Time-major and unbound once: indexing step t inside the loop would make backward build a
        # full (B, T, 3H) zero gradient per step, O(T²) work; unbind's backward stacks once.
        projected = nn.functional.linear(inputs.transpose(0, 1), self.weight_ih, self.bias_ih)  # (T, B, 3H)
        gates_in = projected.unbind(0)  # T × (B, 3H)
        weights = attention.t().unsqueeze(-1).unbind(0)  # T × (B, 1)
        # The state in at least fp32: under bf16 autocast the products are bf16, but T steps of
        # accumulating into a bf16 state would lose what the early steps added.
        state_dtype = torch.promote_types(inputs.dtype, torch.float32)
        h = inputs.new_zeros(batch, hidden, dtype=state_dtype) if h0 is None else h0
        weight_hh_t = self.weight_hh.t()
        for gi, a in zip(gates_in, weights, strict=True):
            gh = torch.addmm(self.bias_hh, h, weight_hh_t)  # (B, 3H)
            reset_keep = torch.sigmoid(gi[:, : 2 * hidden] + gh[:, : 2 * hidden])  # (B, 2H): r, z
            reset, keep = reset_keep[:, :hidden], reset_keep[:, hidden:]
            candidate = torch.tanh(torch.addcmul(gi[:, 2 * hidden :], reset, gh[:, 2 * hidden :]))
            update = a * (1.0 - keep)  # a_t · u_t, (B, H)
            h = torch.addcmul(h, update, candidate - h)
        return h
