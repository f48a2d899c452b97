"""Model registry, and saving/loading models as safetensors weights + JSON spec (never pickle)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from training.models.base import Batch, CtrModel, ModelSpec

MODELS: dict[str, type[CtrModel]] = {}

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"


def register(name: str):
    """Class decorator adding a model to `MODELS` under `name`."""

    def wrap(cls: type[CtrModel]) -> type[CtrModel]:
        if name in MODELS:
            raise ValueError(
                f"model name {name!r} registered twice ({MODELS[name].__name__}, {cls.__name__})"
            )
        MODELS[name] = cls
        return cls

    return wrap


# Modules of this package that hold shared code, not models.
_NOT_MODELS = frozenset({"base", "sequence"})


def _load_zoo() -> None:
    # Importing the model modules fills MODELS; done lazily so `import training.models` stays light.
    # Every other module of this package is a model file, so adding one needs no edit here.
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _NOT_MODELS and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


def build_model(spec: ModelSpec) -> CtrModel:
    _load_zoo()
    if spec.name not in MODELS:
        raise ValueError(f"unknown model {spec.name!r}; valid names: {', '.join(sorted(MODELS))}")
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
    "Batch",
    "CtrModel",
    "ModelSpec",
    "build_model",
    "load_model",
    "register",
    "save_model",
    "save_state",
]
