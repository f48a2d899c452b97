"""Evaluate CTR models: click probabilities per split, ctr_metrics overall and on test slices."""

from __future__ import annotations

import numpy as np
import torch

from training.batching import BatchBuilder, batch_keys
from training.ingest_data import Examples, IngestData
from training.metrics import ctr_metrics
from training.models import CtrModel
from training.runtime import autocast, model_device, to_device

EVAL_BATCH_SIZE = 4096


# Test slices reported beside the overall metrics, as (description, rule). "Train impressions" count
# the user's examples in the train split; "behaviors" those before the impression (hist_end).
SHORT_HISTORY, LONG_HISTORY, HEAVY_SHARE = 10, 100, 0.10
SLICES = {
    "new_users": "users with no train impressions",
    "heavy_users": f"the {HEAVY_SHARE:.0%} of users with the most train impressions",
    "short_history": f"fewer than {SHORT_HISTORY} behaviors before the impression",
    "long_history": f"at least {LONG_HISTORY} behaviors before the impression",
}


def slice_masks(examples: Examples, train: Examples) -> dict[str, np.ndarray]:
    """Boolean masks over `examples`, one per SLICES entry."""
    size = int(max(examples.user.max(initial=0), train.user.max(initial=0))) + 1
    per_user = np.bincount(train.user, minlength=size)
    active = per_user[per_user > 0]
    heavy_from = np.quantile(active, 1 - HEAVY_SHARE) if len(active) else np.inf
    seen = per_user[examples.user]
    return {
        "new_users": seen == 0,
        "heavy_users": (seen > 0) & (seen >= heavy_from),
        "short_history": examples.hist_end < SHORT_HISTORY,
        "long_history": examples.hist_end >= LONG_HISTORY,
    }


def slice_metrics(examples: Examples, train: Examples, probs: np.ndarray) -> dict[str, dict[str, float]]:
    """ctr_metrics per slice of `examples` (SLICES); a slice with no examples gets n = 0 and NaNs."""
    return {
        name: ctr_metrics(examples.user[mask], examples.label[mask], probs[mask])
        for name, mask in slice_masks(examples, train).items()
    }


def _check_vocab(model: CtrModel, data: IngestData) -> None:
    for entity, size in data.vocab_sizes.items():
        model_size = model.spec.vocab_sizes.get(entity)
        if model_size is not None and model_size < size:
            raise ValueError(
                f"the model knows {model_size} {entity} ids, the data has {size}; score it on "
                f"data.restricted_to(model.spec.vocab_sizes) so unseen ids become PAD"
            )


@torch.no_grad()
def predict_examples(
    model: CtrModel, builder: BatchBuilder, examples: Examples, batch_size: int
) -> np.ndarray:
    """Click probabilities (N,) float32 of `examples` in their order, in eval mode without grad."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for batch, _ in builder.batches(examples, batch_size):
            with autocast(device):
                logits = model(to_device(batch, device))
            chunks.append(torch.sigmoid(logits.float()).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(chunks)


def _builder_for(model: CtrModel, data: IngestData) -> BatchBuilder:
    _check_vocab(model, data)
    return BatchBuilder(data, model.sequence_lengths(), batch_keys(model))


def predict(model: CtrModel, data: IngestData, split: str, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Click probabilities (N,) float32 for the examples of `split`, in their stored order."""
    return predict_examples(model, _builder_for(model, data), data.split(split), batch_size)


def evaluate(
    model: CtrModel, data: IngestData, split: str, batch_size: int = EVAL_BATCH_SIZE
) -> dict[str, float]:
    """auc, gauc, logloss, calibration and n of `model` on `split`."""
    examples = data.split(split)
    return ctr_metrics(examples.user, examples.label, predict(model, data, split, batch_size))


def predict_metrics(model: CtrModel, builder: BatchBuilder, examples: Examples) -> dict[str, float]:
    """ctr_metrics of `model` on `examples`, batched by `builder`."""
    probs = predict_examples(model, builder, examples, EVAL_BATCH_SIZE)
    return ctr_metrics(examples.user, examples.label, probs)
