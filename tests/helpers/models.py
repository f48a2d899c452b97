"""A tiny model setup for the model-zoo tests: vocab sizes, hparams, one fixed batch holding every
batch key, and the learn / save-load checks every model must pass."""

from __future__ import annotations

from pathlib import Path

import torch

from seqrank.schema import PAD
from training.models import CtrModel, load_model, save_model

B, L, M, K = 32, 12, 30, 5
VOCAB = {"user": 20, "item": 50, "category": 6}
HPARAMS = {
    "embedding_dim": 8,
    "seq_len": L,
    "long_seq_len": M,
    "search_k": K,
    "heads": 2,
    "attention_hidden": [16, 8],
    "mlp_hidden": [32, 16],
    "embedding_l2": 1e-4,
}


def fixed_batch(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A (B,)-row batch with every key of the batch contract, and random click labels (B,)."""
    g = torch.Generator().manual_seed(seed)
    # One long history per row (M behaviors, left-padded, some rows empty); the short history is
    # its last L, and the category search its last K in the candidate's category, as in training.
    long_item = torch.randint(1, VOCAB["item"], (B, M), generator=g)
    lengths = torch.randint(0, M + 1, (B,), generator=g)
    lengths[:3] = torch.tensor([0, 1, L // 2])
    long_item[torch.arange(M) < (M - lengths)[:, None]] = PAD
    long_category = torch.where(long_item == PAD, PAD, long_item % (VOCAB["category"] - 1) + 1)
    # Behaviors every 10 minutes, with a 2-hour gap every 7th step: several sessions per row.
    steps = torch.arange(M) * 600_000 + (torch.arange(M) // 7) * 7_200_000
    long_ts = torch.where(long_item == PAD, PAD, steps.expand(B, M))
    category = torch.randint(1, VOCAB["category"], (B,), generator=g)
    cat_item = torch.full((B, K), PAD)
    cat_ts = torch.full((B, K), PAD)
    for row in range(B):
        same = (long_category[row] == category[row]).nonzero().flatten()[-K:]
        if len(same):
            cat_item[row, K - len(same) :] = long_item[row, same]
            cat_ts[row, K - len(same) :] = long_ts[row, same]
    batch = {
        "user": torch.randint(1, VOCAB["user"], (B,), generator=g),
        "item": torch.randint(1, VOCAB["item"], (B,), generator=g),
        "category": category,
        "ts": torch.full((B,), int(steps[-1]) + 600_000),
        "position": torch.randint(0, 11, (B,), generator=g),
        "hist_item": long_item[:, -L:],
        "hist_category": long_category[:, -L:],
        "hist_ts": long_ts[:, -L:],
        "long_item": long_item,
        "long_category": long_category,
        "long_ts": long_ts,
        "cat_item": cat_item,
        "cat_ts": cat_ts,
    }
    return batch, torch.randint(0, 2, (B,), generator=g).float()


def assert_learns(
    model: CtrModel, batch: dict[str, torch.Tensor], labels: torch.Tensor, steps: int = 30
) -> list[float]:
    """`steps` Adam steps (lr 1e-2) on one batch must bring the BCE below 0.7x its start."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), labels)
        losses.append(loss.item())
        optimizer.zero_grad()
        (loss + model.regularization(batch)).backward()
        optimizer.step()
    assert losses[-1] < 0.7 * losses[0], losses
    return losses


def assert_round_trip(model: CtrModel, path: Path, batches: list[dict[str, torch.Tensor]]) -> CtrModel:
    """save → load in eval mode gives bit-identical logits on every batch; returns the loaded model."""
    model.eval()
    save_model(model, path)
    loaded = load_model(path)
    with torch.no_grad():
        for batch in batches:
            assert torch.equal(model(batch), loaded(batch))
    return loaded
