"""Model registry, and saving/loading models as safetensors weights + JSON spec (never pickle)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from seqrank.config import ModelConfig
from training.models.base import CtrModel, ModelOptions, ModelSpec
from training.models.bst import BST
from training.models.deepfm import DeepFM
from training.models.dien import DIEN
from training.models.din import DIN
from training.models.dsin import DSIN
from training.models.emb_mlp import EmbMLP
from training.models.mimn import MIMN
from training.models.sim import SIM
from training.models.wide_deep import WideDeep

# The model zoo by registry name (config `model.name`); a new model file adds its line here.
MODELS: dict[str, type[CtrModel]] = {
    "emb_mlp": EmbMLP,
    "wide_deep": WideDeep,
    "deepfm": DeepFM,
    "din": DIN,
    "dien": DIEN,
    "bst": BST,
    "dsin": DSIN,
    "sim": SIM,
    "mimn": MIMN,
}

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"

# Hparams every model may read: the ModelConfig fields, and the L2 weight the trainer adds.
SHARED_HPARAMS = frozenset(ModelConfig.model_fields) - {"name", "options"} | {"embedding_l2"}


def model_hparams(model_cfg: ModelConfig) -> dict[str, Any]:
    """A spec's flat hparams from the model config: the shared fields plus `model.options`."""
    hparams = model_cfg.model_dump(exclude={"name", "options"})
    clash = sorted(set(model_cfg.options) & set(hparams))
    if clash:
        raise ValueError(f"model.options {clash} repeat model fields; set them as model.<field>")
    return {**hparams, **model_cfg.options}


def model_class(name: str) -> type[CtrModel]:
    """The class registered as `name`; ValueError listing the valid names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Validate `model.options` for model `name` before anything runs: ValueError naming the bad
    field (and value) and listing the model's valid options."""
    model_class(name).Options.parse(name, options)


def build_model(spec: ModelSpec) -> CtrModel:
    """The model `spec` describes; its hparams beyond the shared ones are checked as its options."""
    check_options(spec.name, {key: value for key, value in spec.hparams.items() if key not in SHARED_HPARAMS})
    return MODELS[spec.name](spec)


def save_model(model: CtrModel, path: Path | str) -> None:
    """Write `model.safetensors` and `model.json` into directory `path`."""
    save_state(model.spec, model.state_dict(), path)


def save_state(spec: ModelSpec, state: dict[str, torch.Tensor], path: Path | str) -> None:
    """`save_model` for weights held apart from a model (e.g. the best epoch's state dict)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path / WEIGHTS_FILE))
    (path / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2, sort_keys=True))


def load_model(path: Path | str, device: str = "cpu") -> CtrModel:
    """Rebuild a model from a directory written by `save_model`, in eval mode."""
    path = Path(path)
    spec = ModelSpec.from_dict(json.loads((path / SPEC_FILE).read_text()))
    model = build_model(spec)
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE), device=device))
    return model.to(device).eval()


__all__ = [
    "MODELS",
    "CtrModel",
    "ModelOptions",
    "ModelSpec",
    "build_model",
    "check_options",
    "load_model",
    "model_class",
    "model_hparams",
    "save_model",
    "save_state",
]
