"""The model interface every ranking model implements, and its portable description (`ModelSpec`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Self

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError
from torch import nn

from training.batch import Batch, sequence_lengths

# Positions past this share the last bias row; logged slates are far shorter.
MAX_POSITION = 64


# Field types the options classes share. Layer sizes accept any sequence (a tuple in code, a list
# in YAML or JSON).
LayerSizes = Annotated[list[PositiveInt], Field(min_length=1, strict=False)]
MlpActivation = Literal["dice", "prelu", "relu", "sigmoid"]  # training.layers.activation.ACTIVATIONS


class ModelOptions(BaseModel):
    """A model's own hyperparameters (`model.options` in the config), beside the ModelConfig fields
    every model shares. Each model declares a subclass in its own file, with a default and a reason
    per field (an empty one when it has no options of its own)."""

    # Frozen like the config; unknown keys are typos; strict so 1.5 is no int and "3" no number.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @classmethod
    def names(cls) -> list[str]:
        return sorted(cls.model_fields)

    @classmethod
    def parse(cls, model: str, options: Mapping[str, Any]) -> Self:
        """Validated options; ValueError naming the field, the bad value and the valid options."""
        unknown = sorted(set(options) - set(cls.model_fields))
        if unknown:
            valid = ", ".join(cls.names()) or "none"
            raise ValueError(
                f"model.options.{unknown[0]}: not an option of model {model!r}; valid options: {valid}"
            )
        try:
            return cls.model_validate(dict(options))
        except ValidationError as err:
            problems = [
                f"model.options.{e['loc'][0]} = {e.get('input')!r}: {e['msg']}"
                if e["loc"]
                else f"model.options of model {model!r}: {e['msg']}"  # a rule across fields
                for e in err.errors()
            ]
            raise ValueError("; ".join(problems)) from None

    @classmethod
    def from_hparams(cls, model: str, hparams: Mapping[str, Any]) -> Self:
        """The options held in a spec's flat hparams (ModelConfig fields plus options)."""
        return cls.parse(model, {key: value for key, value in hparams.items() if key in cls.model_fields})


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model without training code: name, hyperparameters, vocab sizes."""

    name: str
    hparams: dict[str, Any]  # the model section of the config (embedding_dim, seq_len, layer sizes, ...)
    vocab_sizes: dict[str, int] = field(default_factory=dict)  # entity -> rows, including PAD at 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(name=data["name"], hparams=dict(data["hparams"]), vocab_sizes=dict(data["vocab_sizes"]))


class CtrModel(nn.Module):
    """Base class: `forward(batch) -> logits (B,)`; the trainer owns loss, optimizer and device.

    Models with a training-only loss term (DIEN's next-behavior loss, MIMN's memory utilization,
    soft-search SIM's sub-model CTR loss) set `has_auxiliary_loss`; the trainer then calls
    `forward(batch, labels)` with the click labels (B,) and gets `(logits, auxiliary_loss)` back
    from the same pass, so a model keeps no state between calls.
    """

    # The model's own options class (`model.options`); ModelOptions when it has none.
    Options: ClassVar[type[ModelOptions]] = ModelOptions
    has_auxiliary_loss: ClassVar[bool] = False

    # Batch keys the model cannot run without; the trainer checks them to fail with a clear error.
    required_inputs: tuple[str, ...] = ("user", "item", "category")
    # Keys a model reads when the batch has them.
    optional_inputs: tuple[str, ...] = ("position",)

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.options = self.Options.from_hparams(spec.name, spec.hparams)
        # Position bias as a separate shallow term (YouTube's "Recommending What Video to Watch Next",
        # RecSys 2019; PAL, RecSys 2019): logged clicks depend strongly on the slot, which the model
        # must explain away while training, but at serving time every candidate would share one
        # slot, so the term is left out there and the ranking is position-free.
        self.position_bias = nn.Embedding(MAX_POSITION + 1, 1)
        nn.init.zeros_(self.position_bias.weight)

    def position_logit(self, batch: Batch) -> torch.Tensor:
        """The position bias (B,) when the batch carries positions, else a scalar 0."""
        position = batch.get("position")
        if position is None:
            return torch.zeros((), device=self.position_bias.weight.device)
        return self.position_bias(position.long().clamp(0, MAX_POSITION)).squeeze(-1)

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def zero_loss(self) -> torch.Tensor:
        """A scalar 0 on the model's device (an auxiliary loss that is switched off)."""
        return torch.zeros((), device=next(self.parameters()).device)

    def sequence_lengths(self) -> dict[str, int]:
        """Positions per sequence group (hist, long, cat) the batches must hold for this model;
        from the hparams (training.batch.sequence_lengths) unless a model reads fewer."""
        return sequence_lengths(self.spec.hparams)

    def prepare(self, id_counts: dict[str, np.ndarray]) -> None:
        """Fit data-dependent state before training: `id_counts[entity][index]` is how often each
        id occurs in the training data (training.ingest_data.id_counts). The state must live in buffers
        so it is saved with the weights; a no-op unless a model (or its embeddings) needs it, e.g.
        frequency-based hashing picking the ids that keep their own row."""
        for module in self.modules():
            prepare = getattr(module, "prepare", None)
            if module is not self and callable(prepare):
                prepare(id_counts)

    def regularization(self, batch: Batch) -> torch.Tensor:
        """Extra loss term (e.g. mini-batch aware L2); zero unless a model overrides it."""
        return self.zero_loss()
