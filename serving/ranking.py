"""Turn one ranking request into a model batch (training/models/base.py convention) and score it."""

from __future__ import annotations

import numpy as np
import torch

from seqrank.schema import PAD
from serving.bundle import Bundle


def _known(indices: np.ndarray, size: int | None) -> np.ndarray:
    # The online store may already hold ids appended to the vocab after this model was trained;
    # past its embedding table they are unknown to the model, not an index error.
    if size is None:
        return indices
    return np.where((indices >= 0) & (indices < size), indices, PAD)


def right_aligned(values: np.ndarray, length: int) -> np.ndarray:
    """The last `length` values, most recent at the end, PAD-filled on the left: shape (length,)."""
    out = np.full(length, PAD, dtype=np.int64)
    tail = values[-length:] if len(values) else values
    if len(tail):
        out[length - len(tail) :] = tail
    return out


def build_batch(
    bundle: Bundle,
    user_id: str,
    candidates: list[str],
    sequence: dict[str, np.ndarray],
    now_ms: int,
) -> dict[str, torch.Tensor]:
    """One row per candidate: user, item, category, ts (B,) and hist_item/category/ts (B, L).

    The history rows are one (1, L) tensor expanded to (B, L), not B copies.
    """
    sizes = bundle.vocab_sizes
    b, length = len(candidates), bundle.seq_len
    user = _known(np.array([bundle.user_index.get(user_id, PAD)], dtype=np.int64), sizes.get("user"))
    items = np.fromiter((bundle.item_index.get(c, PAD) for c in candidates), dtype=np.int64, count=b)
    in_table = items < len(bundle.item_category)
    categories = np.where(in_table, bundle.item_category[np.where(in_table, items, PAD)], PAD)
    items = _known(items, sizes.get("item"))
    categories = _known(categories, sizes.get("category"))
    hist_item = _known(right_aligned(sequence["seq_item"], length), sizes.get("item"))
    hist_category = _known(right_aligned(sequence["seq_category"], length), sizes.get("category"))
    hist_ts = right_aligned(sequence["seq_ts"], length)
    return {
        "user": torch.from_numpy(user).expand(b),
        "item": torch.from_numpy(items),
        "category": torch.from_numpy(categories),
        "ts": torch.full((b,), now_ms, dtype=torch.int64),
        "hist_item": torch.from_numpy(hist_item).unsqueeze(0).expand(b, length),
        "hist_category": torch.from_numpy(hist_category).unsqueeze(0).expand(b, length),
        "hist_ts": torch.from_numpy(hist_ts).unsqueeze(0).expand(b, length),
    }


def score(bundle: Bundle, batch: dict[str, torch.Tensor]) -> np.ndarray:
    """Click probabilities sigmoid(logit), shape (B,)."""
    with torch.inference_mode():
        logits = bundle.model(batch)
    return torch.sigmoid(logits.float()).numpy()
