"""Continuous features as model input: standardization with stored statistics, and AutoDis embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from training.layers.hparams import config_default, positive_int

DENSE_MODES = ("off", "normalized", "autodis")
DEFAULT_AUTODIS_BUCKETS: int = config_default("autodis_buckets")
# AutoDis τ and α; models take them from their options (training.models.sequence.DenseOptions).
DEFAULT_TEMPERATURE, DEFAULT_SKIP = 1.0, 0.1


class Standardize(nn.Module):
    """(x − mean) / std per feature, with the training data's statistics kept in buffers.

    The statistics are exact running sums (count, Σx, Σx²) over every batch seen in training mode,
    so after one epoch they are the train split's mean and variance, and further epochs over the
    same split leave them there. Evaluation never updates them; they are saved with the weights,
    so serving standardizes exactly as training did. Before any training batch: mean 0, std 1.

    Args:
        num_features: F.
        eps: added to the variance; a constant feature (e.g. no prices in the data) maps to 0.

    Shapes: (B, F) → (B, F).
    """

    count: torch.Tensor
    total: torch.Tensor
    total_sq: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        if num_features <= 0:
            raise ValueError(f"Standardize num_features = {num_features}: must be > 0")
        self.eps = eps
        # float64: sums over millions of rows would lose the variance in float32.
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(num_features, dtype=torch.float64))
        self.register_buffer("total_sq", torch.zeros(num_features, dtype=torch.float64))

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation (F,), float64."""
        seen = self.count.clamp(min=1.0)
        mean = self.total / seen
        var = (self.total_sq / seen - mean.square()).clamp(min=0.0)
        # Written without branching on count, so a forward never waits on the device.
        return mean, torch.where(self.count > 0, (var + self.eps).sqrt(), torch.ones_like(var))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                values = x.detach().to(torch.float64)
                self.count += values.shape[0]
                self.total += values.sum(0)
                self.total_sq += values.square().sum(0)
        mean, std = self.statistics()
        return (x - mean.to(x.dtype)) / std.to(x.dtype)


class AutoDis(nn.Module):
    """AutoDis (Guo et al., "An Embedding Learning Framework for Numerical Features in CTR
    Prediction", KDD 2021, arXiv:2012.08986): each numerical feature becomes a mix of H learned
    meta-embeddings, weighted by a learned soft discretization of its value.

    Notation: B batch, F features, H buckets (meta-embeddings per feature), D output size.
    For feature j with value x_j, all parameters per feature:

        h_j   = LeakyReLU(w_j · x_j + b_j)               (H,)   w_j, b_j ∈ R^H
        x̃_j   = W_j h_j + α · h_j                       (H,)   W_j ∈ R^{H×H}, α the skip factor
        p_j   = softmax(x̃_j / τ)                        (H,)   soft bucket assignment, Σ_h p_jh = 1
        e_j   = Σ_h p_jh · ME_j^h                        (D,)   ME_j ∈ R^{H×D} the meta-embeddings

    The paper's w_j has no bias; without one every positive value (and every negative one)
    selects the same bucket ordering, so the bias b_j lets bucket boundaries sit anywhere.

    Args:
        num_features: F.
        dim: D.
        buckets: H.
        temperature: τ; small values make the assignment close to hard bucketing.
        skip: α.

    Shapes: x (B, F) float → (B, F, D); `bucket_weights` (B, F) → (B, F, H).
    """

    def __init__(
        self,
        num_features: int,
        dim: int,
        buckets: int,
        temperature: float = DEFAULT_TEMPERATURE,
        skip: float = DEFAULT_SKIP,
    ) -> None:
        super().__init__()
        if num_features <= 0 or dim <= 0:
            raise ValueError(f"AutoDis num_features = {num_features}, dim = {dim}: both must be > 0")
        if buckets < 2:
            raise ValueError(f"AutoDis buckets = {buckets}: must be >= 2")
        if temperature <= 0:
            raise ValueError(f"AutoDis temperature = {temperature}: must be > 0")
        self.temperature = temperature
        self.skip = skip
        self.scale = nn.Parameter(torch.randn(num_features, buckets))  # w_j
        self.shift = nn.Parameter(torch.randn(num_features, buckets) * 0.5)  # b_j
        self.mix = nn.Parameter(torch.randn(num_features, buckets, buckets) / buckets**0.5)  # W_j
        self.meta = nn.Parameter(torch.randn(num_features, buckets, dim) * 1e-2)  # ME_j

    def bucket_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Soft discretization p: (B, F) → (B, F, H), each row summing to 1."""
        h = nn.functional.leaky_relu(x.unsqueeze(-1) * self.scale + self.shift)  # (B, F, H)
        logits = torch.einsum("fgh,bfh->bfg", self.mix, h) + self.skip * h  # (B, F, H)
        return torch.softmax(logits / self.temperature, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bfh,fhd->bfd", self.bucket_weights(x), self.meta)  # (B, F, D)


class DenseFeatures(nn.Module):
    """The `item_dense` batch key as MLP input: standardized, then either used as is ("normalized",
    F values) or embedded by AutoDis ("autodis", F·D values, D = embedding_dim).

    Args:
        num_features: F.
        mode: "normalized" or "autodis".
        dim: D, AutoDis output size per feature.
        buckets, temperature, skip: AutoDis H, τ, α.

    Shapes: (B, F) → (B, out_dim).
    """

    def __init__(
        self,
        num_features: int,
        mode: str,
        dim: int,
        buckets: int = DEFAULT_AUTODIS_BUCKETS,
        temperature: float = DEFAULT_TEMPERATURE,
        skip: float = DEFAULT_SKIP,
    ) -> None:
        super().__init__()
        if mode not in ("normalized", "autodis"):
            raise ValueError(f"dense mode {mode!r}: expected normalized or autodis")
        self.num_features = num_features
        self.standardize = Standardize(num_features)
        self.autodis = AutoDis(num_features, dim, buckets, temperature, skip) if mode == "autodis" else None
        self.out_dim = num_features * dim if self.autodis is not None else num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"item_dense must be (B, {self.num_features}); got {tuple(x.shape)}")
        z = self.standardize(x.float())  # (B, F)
        if self.autodis is None:
            return z
        return self.autodis(z).flatten(1)  # (B, F·D)


def make_dense(
    hparams: Mapping[str, Any],
    num_features: int,
    dim: int,
    temperature: float = DEFAULT_TEMPERATURE,
    skip: float = DEFAULT_SKIP,
) -> DenseFeatures | None:
    """The continuous-feature block hparams `dense` asks for; None when "off" (ModelConfig's default).

    Reads hparams autodis_buckets (H); `temperature` (τ) and `skip` (α) are the model's options
    (training.models.sequence.DenseOptions).
    """
    mode = hparams.get("dense", config_default("dense"))
    if mode not in DENSE_MODES:
        raise ValueError(f"hparams['dense'] = {mode!r}: expected one of {', '.join(DENSE_MODES)}")
    if mode == "off":
        return None
    buckets = positive_int(hparams, "autodis_buckets", DEFAULT_AUTODIS_BUCKETS)
    if mode == "autodis" and buckets < 2:
        raise ValueError(f"hparams['autodis_buckets'] = {buckets}: must be >= 2")
    return DenseFeatures(num_features, mode, dim, buckets, temperature, skip)
