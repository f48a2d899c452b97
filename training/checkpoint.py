"""Per-epoch training checkpoints: the last epoch's whole state (to resume) and the best model.

    <dir>/last/model.safetensors, model.json   weights and spec after the last finished epoch
    <dir>/last/trainer_state.pt                optimizer, epoch counters, history, RNG states
    <dir>/best/model.safetensors, model.json   the best epoch so far (what `fit` returns)

Each directory is replaced in one rename (seqrank.storage.atomic_dir), so a run killed while
writing leaves the previous checkpoint intact. Weights are safetensors; the trainer state is loaded
with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from seqrank.storage import atomic_dir
from training.models import WEIGHTS_FILE, CtrModel, save_model, save_state

LAST, BEST, STATE_FILE = "last", "best", "trainer_state.pt"


@dataclass
class Progress:
    """Where training stands after `epoch` finished epochs."""

    epoch: int = 0
    best_score: float = float("-inf")
    best_epoch: int = 0
    stale: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def save(
    directory: Path,
    model: CtrModel,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    rng: np.random.Generator,
    best_state: dict[str, torch.Tensor] | None,
) -> None:
    """Write `last/` and, when `best_state` is given (the epoch improved), `best/`."""
    directory = Path(directory)
    with atomic_dir(directory / LAST) as tmp:
        save_model(model, tmp)
        torch.save(
            {
                "progress": asdict(progress),
                "optimizer": optimizer.state_dict(),
                "numpy_rng": json.dumps(rng.bit_generator.state),
                "torch_rng": torch.get_rng_state(),
            },
            tmp / STATE_FILE,
        )
    if best_state is not None:
        with atomic_dir(directory / BEST) as tmp:
            save_state(model.spec, best_state, tmp)


def exists(directory: Path | None) -> bool:
    return directory is not None and (Path(directory) / LAST / STATE_FILE).is_file()


def load(
    directory: Path, model: CtrModel, optimizer: torch.optim.Optimizer, rng: np.random.Generator
) -> tuple[Progress, dict[str, torch.Tensor]]:
    """Restore model, optimizer and RNGs from `last/` in place; returns the progress and best weights.

    Raises ValueError when the checkpoint belongs to another model or configuration.
    """
    directory = Path(directory)
    saved_spec = json.loads((directory / LAST / "model.json").read_text())
    if saved_spec != json.loads(json.dumps(model.spec.to_dict())):
        raise ValueError(
            f"checkpoint {directory} was written for another model or config "
            f"({saved_spec.get('name')!r}, hparams differ); start fresh or point train.checkpoint_dir elsewhere"
        )
    device = next(model.parameters()).device
    model.load_state_dict(load_file(str(directory / LAST / WEIGHTS_FILE), device=str(device)))
    state: dict[str, Any] = torch.load(directory / LAST / STATE_FILE, weights_only=True, map_location=device)
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = json.loads(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"].cpu())
    best = load_file(str(directory / BEST / WEIGHTS_FILE), device=str(device))
    return Progress(**state["progress"]), best
