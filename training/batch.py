"""The batch contract: every key a model batch can hold, with its dtype, shape, entity and sequence group."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from seqrank.config import ModelConfig

# A batch is a dict of tensors keyed by the names in KEYS; every model reads the keys it needs.
# Histories are the user's behaviors strictly before `ts` (training gathers them with hist_end;
# serving reads them from the Feast online store), so both see exactly the same tensors. Sequence
# keys are right-aligned: the most recent behavior is at [:, -1]; missing positions on the left
# are PAD (0).
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BatchKey:
    """One batch key: its tensor's dtype and shape, the vocab entity it indexes (None: not an id),
    its sequence group (hist, long, cat; None: one value per example) and what it holds."""

    name: str
    dtype: torch.dtype
    shape: str  # B batch, L = seq_len, M = long_seq_len, K = search_k, F = len(DENSE_FEATURES)
    entity: str | None
    group: str | None
    doc: str
    served: bool = True  # whether the ranking service builds it


KEYS: tuple[BatchKey, ...] = (
    BatchKey("user", torch.int64, "(B,)", "user", None, "dense user index"),
    BatchKey("item", torch.int64, "(B,)", "item", None, "dense index of the candidate item"),
    BatchKey("category", torch.int64, "(B,)", "category", None, "dense index of the candidate's category"),
    BatchKey("ts", torch.int64, "(B,)", None, None, "epoch ms of the impression"),
    BatchKey(
        "position",
        torch.int32,
        "(B,)",
        None,
        None,
        "optional: the slot the impression was shown in (1-based; <= 0 when unknown); training and "
        "evaluation on logged impressions pass it, serving does not",
        served=False,
    ),
    BatchKey("hist_item", torch.int64, "(B, L)", "item", "hist", "items of the user's last L behaviors"),
    BatchKey("hist_category", torch.int64, "(B, L)", "category", "hist", "their categories"),
    BatchKey("hist_ts", torch.int64, "(B, L)", None, "hist", "their epoch ms"),
    BatchKey(
        "long_item",
        torch.int64,
        "(B, M)",
        "item",
        "long",
        "the same for the long history, M = hparams long_seq_len (SIM soft search, MIMN)",
    ),
    BatchKey("long_category", torch.int64, "(B, M)", "category", "long", "their categories"),
    BatchKey("long_ts", torch.int64, "(B, M)", None, "long", "their epoch ms"),
    BatchKey(
        "cat_item",
        torch.int64,
        "(B, K)",
        "item",
        "cat",
        "SIM hard search: the user's latest K = hparams search_k behaviors in the candidate's "
        "category (training reads a user → category index of the behaviors; serving reads the Feast "
        "user_category_behavior view)",
    ),
    BatchKey("cat_ts", torch.int64, "(B, K)", None, "cat", "their epoch ms"),
    BatchKey(
        "item_dense",
        torch.float32,
        "(B, F)",
        None,
        None,
        "optional: the candidate's continuous features as of `ts`, columns training.dense."
        "DENSE_FEATURES (log price, price known, smoothed CTR, log impressions); built only for "
        "models with hparams dense != 'off'. Training reads the price from items/ and the latest "
        "item_stats/ snapshot with snapshot ts <= ts; serving the bundle's item table and the Feast "
        "item_stats view",
    ),
)
KEY_BY_NAME: dict[str, BatchKey] = {key.name: key for key in KEYS}

# The tuples the loader and the models use, in KEYS order.
# Per-example ids and values, read from the example columns.
EXAMPLE_KEYS = tuple(k.name for k in KEYS if k.group is None and not k.dtype.is_floating_point)
HISTORY_KEYS = tuple(k.name for k in KEYS if k.group == "hist")
LONG_KEYS = tuple(k.name for k in KEYS if k.group == "long")
CATEGORY_KEYS = tuple(k.name for k in KEYS if k.group == "cat")
# Continuous features (training.dense), built only when a model asks for them.
DENSE_KEYS = tuple(k.name for k in KEYS if k.dtype.is_floating_point)
SEQUENCE_BATCH_KEYS = EXAMPLE_KEYS + HISTORY_KEYS + LONG_KEYS + CATEGORY_KEYS
BATCH_KEYS = SEQUENCE_BATCH_KEYS + DENSE_KEYS
# The vocab entity each id key indexes; keys absent here (ts, hist_ts, ...) are not ids.
KEY_ENTITY: dict[str, str] = {k.name: k.entity for k in KEYS if k.entity is not None}
# Batch keys the ranking service builds; a model needing others cannot be served.
SERVED_INPUTS = frozenset(k.name for k in KEYS if k.served)

# Hparams giving the positions of each sequence group, and their defaults (ModelConfig's, for specs
# saved without them).
DEFAULT_LONG: int = ModelConfig.model_fields["long_seq_len"].default
DEFAULT_SEARCH_K: int = ModelConfig.model_fields["search_k"].default
SEQUENCE_LENGTHS: dict[str, tuple[str, int | None]] = {
    "hist": ("seq_len", None),
    "long": ("long_seq_len", DEFAULT_LONG),
    "cat": ("search_k", DEFAULT_SEARCH_K),
}


def sequence_lengths(hparams: Mapping[str, Any]) -> dict[str, int]:
    """Positions per sequence group (hist, long, cat) for a model with `hparams`."""
    lengths = {}
    for group, (key, default) in SEQUENCE_LENGTHS.items():
        value = hparams.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"hparams[{key!r}] = {value!r}: must be a positive int")
        lengths[group] = value
    return lengths
