"""Activations used by the CTR models: Dice (DIN) and a name → module factory."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("dice", "prelu", "relu", "sigmoid")


class Dice(nn.Module):
    """Data-adaptive activation from DIN (Zhou et al. 2018, "Deep Interest Network for
    Click-Through Rate Prediction", section Data Adaptive Activation Function).

    f(s) = p(s)·s + (1 − p(s))·α·s with p(s) = sigmoid((s − E[s]) / sqrt(Var[s] + ε)): a PReLU whose
    rectification point follows the batch statistics of each unit. E and Var are mini-batch
    statistics in training and running averages in eval mode (a non-affine batch norm).

    Args:
        num_features: H, the size of the last input dimension.
        eps: ε in the normalisation, 1e-8 as in the paper.

    Shapes: input (..., H) → output of the same shape; statistics are taken over all leading dims.
    """

    def __init__(self, num_features: int, eps: float = 1e-8) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"Dice num_features = {num_features}: must be > 0")
        self.norm = nn.BatchNorm1d(num_features, eps=eps, affine=False)
        self.alpha = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.norm(x.reshape(-1, x.shape[-1]))).view_as(x)
        # p·x + (1 − p)·α·x, written to touch x fewer times
        return x * (self.alpha + p * (1 - self.alpha))


def make_activation(name: str, num_features: int) -> nn.Module:
    """Build the activation `name` (one of ACTIVATIONS) for a layer of `num_features` units."""
    if name == "dice":
        return Dice(num_features)
    if name == "prelu":
        return nn.PReLU(num_features)
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"activation {name!r}: expected one of {', '.join(ACTIVATIONS)}")
