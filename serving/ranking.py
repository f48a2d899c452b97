"""Turn one ranking request into a model batch (training/models/base.py convention) and score it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from seqrank.schema import PAD
from serving.bundle import Bundle
from training.batch import Batch
from training.dense import STATS_COLUMNS, dense_features


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
    category_sequences: dict[int, dict[str, np.ndarray]] | None = None,
    item_stats: Mapping[str, np.ndarray] | None = None,
) -> Batch:
    """One row per candidate: user, item, category, ts (B,), and the sequence keys the model reads.

    hist_* (B, L) and long_* (B, M) are the latest behaviors of `sequence` (the Feast user_behavior
    row), one (1, L) tensor expanded to (B, L), not B copies. cat_item/cat_ts (B, K), for SIM's
    hard search, come from `category_sequences` (category index → the user_category_behavior row,
    the categories `categories_of` the candidates); a candidate's row is its category's latest K behaviors.
    item_dense (B, F), for models with hparams dense on, is `training.dense.dense_features` of the
    candidate's price (the bundle's item table) and `item_stats` (STATS_COLUMNS → (B,) arrays in
    candidate order, the Feast item_stats row of each candidate: `OnlineFeatures.item_stats` of
    `candidate_items`), computed exactly as training computes it.
    """
    sizes = bundle.vocab_sizes
    b = len(candidates)
    user = _known(np.array([bundle.user_index.get(user_id, PAD)], dtype=np.int64), sizes.get("user"))
    raw_items = candidate_items(bundle, candidates)
    raw_categories = categories_of(bundle, raw_items)
    batch = {
        "user": torch.from_numpy(user).expand(b),
        "item": torch.from_numpy(_known(raw_items, sizes.get("item"))),
        "category": torch.from_numpy(_known(raw_categories, sizes.get("category"))),
        "ts": torch.full((b,), now_ms, dtype=torch.int64),
    }
    for group in ("hist", "long"):
        if not any(key.startswith(f"{group}_") for key in bundle.inputs):
            continue
        length = bundle.lengths[group]
        for name in ("item", "category", "ts"):
            values = right_aligned(sequence[f"seq_{name}"], length)
            if name != "ts":
                values = _known(values, sizes.get(name))
            batch[f"{group}_{name}"] = torch.from_numpy(values).unsqueeze(0).expand(b, length)
    if "cat_item" in bundle.inputs or "cat_ts" in bundle.inputs:
        if category_sequences is None:
            raise ValueError(f"model {bundle.model.spec.name!r} reads cat_* keys: pass category_sequences")
        batch.update(_category_rows(bundle, raw_categories, category_sequences))
    if "item_dense" in bundle.inputs:
        if item_stats is None:
            raise ValueError(f"model {bundle.model.spec.name!r} reads item_dense: pass item_stats")
        batch["item_dense"] = torch.from_numpy(_item_dense(bundle, raw_items, item_stats))
    return batch


def candidate_items(bundle: Bundle, candidates: list[str]) -> np.ndarray:
    """Item index of each candidate (B,), PAD for items the bundle does not know."""
    return np.fromiter(
        (bundle.item_index.get(c, PAD) for c in candidates), dtype=np.int64, count=len(candidates)
    )


def _item_dense(bundle: Bundle, items: np.ndarray, stats: Mapping[str, np.ndarray]) -> np.ndarray:
    missing = [name for name in STATS_COLUMNS if name not in stats]
    if missing:
        raise ValueError(f"item_stats lacks {missing}; expected {', '.join(STATS_COLUMNS)}")
    for name in STATS_COLUMNS:
        if len(stats[name]) != len(items):
            raise ValueError(
                f"item_stats[{name!r}] holds {len(stats[name])} values for {len(items)} candidates"
            )
    inside = (items > PAD) & (items < len(bundle.item_price))
    price = np.where(inside, bundle.item_price[np.where(inside, items, 0)], np.nan)
    return dense_features(price, stats["impressions_total"], stats["clicks_total"])


def categories_of(bundle: Bundle, items: np.ndarray) -> np.ndarray:
    """Category index of each item index (B,) (`candidate_items`), PAD when unknown."""
    in_table = items < len(bundle.item_category)
    return np.where(in_table, bundle.item_category[np.where(in_table, items, PAD)], PAD)


def _category_rows(
    bundle: Bundle, categories: np.ndarray, sequences: dict[int, dict[str, np.ndarray]]
) -> dict[str, torch.Tensor]:
    # One right-aligned row per distinct category, then gathered per candidate.
    k = bundle.lengths["cat"]
    distinct, inverse = np.unique(categories, return_inverse=True)
    empty = np.zeros(0, dtype=np.int64)
    items = np.stack(
        [right_aligned(sequences.get(int(c), {}).get("cat_seq_item", empty), k) for c in distinct]
    )
    ts = np.stack([right_aligned(sequences.get(int(c), {}).get("cat_seq_ts", empty), k) for c in distinct])
    return {
        "cat_item": torch.from_numpy(_known(items, bundle.vocab_sizes.get("item"))[inverse]),
        "cat_ts": torch.from_numpy(ts[inverse]),
    }


def score(bundle: Bundle, batch: Batch) -> np.ndarray:
    """Click probabilities sigmoid(logit), shape (B,)."""
    with torch.inference_mode():
        logits = bundle.model(batch)
    return torch.sigmoid(logits.float()).numpy()
