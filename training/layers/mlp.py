"""The fully connected tower every CTR model ends with."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from training.layers.activation import make_activation


class MLP(nn.Module):
    """Linear → activation (→ dropout) blocks, then an optional linear output layer.

    Args:
        in_dim: input features.
        hidden: sizes of the hidden layers, at least one.
        activation: "dice" (DIN), "prelu", "relu" or "sigmoid".
        out_dim: size of the final linear layer (1 for a logit); None ends on the last hidden layer.
        dropout: dropout rate after each hidden activation.

    Shapes: (B, in_dim) → (B, out_dim), or (B, hidden[-1]) when out_dim is None.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        activation: str = "relu",
        out_dim: int | None = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_dim <= 0:
            raise ValueError(f"MLP in_dim = {in_dim}: must be > 0")
        if not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"MLP hidden = {list(hidden)}: needs at least one layer, every size > 0")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP dropout = {dropout}: must be in [0, 1)")
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers += [nn.Linear(width, size), make_activation(activation, size)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
