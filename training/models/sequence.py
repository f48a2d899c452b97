"""Shared base of the models that read the behavior sequence: embeddings and mini-batch aware L2."""

from __future__ import annotations

import torch
from pydantic import Field, PositiveFloat

from training.batch import Batch
from training.dense import DENSE_FEATURES
from training.layers import BehaviorEmbeddings
from training.layers.autodis import DEFAULT_SKIP, DEFAULT_TEMPERATURE, DenseFeatures, make_dense
from training.layers.hparams import l2_weight, positive_int
from training.models.base import CtrModel, ModelOptions, ModelSpec


class DenseOptions(ModelOptions):
    """Options of the continuous-feature block, for the models that read `item_dense`: used when
    hparams dense = "autodis" (training.layers.autodis.AutoDis)."""

    autodis_temperature: PositiveFloat = Field(
        DEFAULT_TEMPERATURE, description="τ of the bucket softmax; small values make it close to hard"
    )
    autodis_skip: float = Field(DEFAULT_SKIP, description="α, the weight of AutoDis's skip connection")


class BehaviorSequenceModel(CtrModel):
    """Holds the [item ⊕ category] and user embeddings (`self.embeddings`), D (`self.dim`), L
    (`self.seq_len`) and the mini-batch aware L2 weight (`self.l2`, hparams embedding_l2; the
    paper's Mini-batch Aware Regularization, 0 or absent disables it).

    The embeddings follow hparams `embedding` ("full", or "double_hash" with full_rows and
    hash_rows; `training.layers.embedding.make_embedding`). A model that reads the candidate's
    continuous features calls `enable_dense()` once in its constructor (adding the width it returns
    to its MLP input) and `with_dense(batch, features)` on that input; hparams `dense` then decides
    whether they are used ("off", "normalized" or "autodis": `training.layers.autodis.make_dense`).
    Such a model's options class derives from `DenseOptions`.
    """

    required_inputs: tuple[str, ...] = ("user", "item", "category", "hist_item", "hist_category")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.dim = positive_int(spec.hparams, "embedding_dim")
        self.seq_len = positive_int(spec.hparams, "seq_len")
        self.l2 = l2_weight(spec.hparams)
        self.embeddings = BehaviorEmbeddings(spec.vocab_sizes, self.dim, spec.hparams)
        self.dense: DenseFeatures | None = None

    def enable_dense(self) -> int:
        """Read `item_dense` when hparams `dense` is not "off"; returns the width `with_dense` adds
        to the features (0 when off). Adds item_dense to this model's optional inputs."""
        options = self.options
        if not isinstance(options, DenseOptions):
            raise TypeError(f"{type(self).__name__}.Options must derive from DenseOptions to read item_dense")
        self.dense = make_dense(
            self.spec.hparams,
            len(DENSE_FEATURES),
            self.dim,
            options.autodis_temperature,
            options.autodis_skip,
        )
        if self.dense is None:
            return 0
        self.optional_inputs = (*type(self).optional_inputs, "item_dense")
        return self.dense.out_dim

    def with_dense(self, batch: Batch, features: torch.Tensor) -> torch.Tensor:
        """`features` (B, N) with the continuous features appended: (B, N + enable_dense())."""
        if self.dense is None:
            return features
        if "item_dense" not in batch:
            raise ValueError(
                f"model {self.spec.name!r} has hparams dense = {self.spec.hparams.get('dense')!r} and "
                "reads batch key 'item_dense', which this batch lacks"
            )
        return torch.cat([features, self.dense(batch["item_dense"]).to(features.dtype)], dim=1)

    def regularization(self, batch: Batch) -> torch.Tensor:
        """embedding_l2 · Σ ||w||² over the embedding rows this batch reads."""
        if self.l2 == 0.0:
            return super().regularization(batch)
        return self.l2 * self.embeddings.batch_l2(batch, (*self.required_inputs, *self.optional_inputs))
