"""Load a serving bundle: the model (safetensors + spec), vocabularies, item table and metadata.

Layout, as the deploy step exports it::

    bundle/model/{model.safetensors,model.json}   training.models.save_model output
    bundle/vocab/{user,item,category,brand}.parquet   VOCAB: raw id -> dense index (0 = unknown)
    bundle/items.parquet                          ITEMS: item index -> category, brand, price
                                                  (price feeds item_dense when the model reads it)
    bundle/bundle.json                            {"model_version", "run_id", "metrics", "feature_store", ...}
    bundle/feast -> <store version>               in a release: the Feast store it goes live with
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seqrank.schema import ITEMS, PAD, VOCAB, VOCAB_ENTITIES, check_schema
from training.batch import SERVED_INPUTS
from training.dense import price_table
from training.models import CtrModel, load_model

log = logging.getLogger(__name__)

FEAST_LINK = "feast"  # components.deploy.releases links a release's store version by this name


class BundleError(ValueError):
    """A serving bundle is missing a part or holds an inconsistent one; the message says which."""


@dataclass(frozen=True)
class Bundle:
    """Everything the service needs to turn raw ids into a model batch, loaded once per (re)load."""

    path: Path
    model: CtrModel
    model_version: str
    run_id: str
    metrics: dict[str, Any]
    seq_len: int  # history length the model was trained with (model.spec.hparams["seq_len"])
    lengths: dict[str, int]  # positions per sequence group (training.batch.sequence_lengths)
    inputs: frozenset[str]  # the batch keys the model reads (required and optional)
    user_index: dict[str, int]
    item_index: dict[str, int]
    item_category: np.ndarray  # (n_items,) category index by item index; PAD for unknown items
    vocab_sizes: dict[str, int] = field(default_factory=dict)  # embedding rows per entity, from the model
    # (n_items,) price by item index, NaN where unknown; read only when the model reads item_dense.
    item_price: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # The Feast store version this bundle was released with (its `feast` link, resolved), and the
    # FeatureService it reads; None and "" for a bundle exported outside a release.
    feast_dir: Path | None = None
    feature_service: str = ""


def _read_vocab(path: Path) -> dict[str, int]:
    if not path.is_file():
        raise BundleError(f"missing vocabulary {path}")
    table = pq.read_table(path)
    check_schema(table, VOCAB, str(path))
    return dict(zip(table.column("raw").to_pylist(), table.column("index").to_pylist(), strict=True))


def _item_categories(path: Path, n_rows: int) -> np.ndarray:
    if not path.is_file():
        raise BundleError(f"missing item table {path}")
    table = pq.read_table(path, columns=["item", "category"])
    check_schema(table, pa.schema([ITEMS.field("item"), ITEMS.field("category")]), str(path))
    items = table.column("item").to_numpy()
    categories = table.column("category").to_numpy()
    size = max(n_rows, int(items.max()) + 1 if len(items) else 1)
    lookup = np.full(size, PAD, dtype=np.int64)
    lookup[items] = categories
    return lookup


def _item_prices(path: Path, n_rows: int) -> np.ndarray:
    # Only models reading item_dense need prices; for them the column is part of the contract.
    if "price" not in pq.read_schema(path).names:
        raise BundleError(f"{path} has no price column, which item_dense (the model's input) needs")
    table = pq.read_table(path, columns=["item", "price"])
    check_schema(table, pa.schema([ITEMS.field("item"), ITEMS.field("price")]), str(path))
    return price_table(table, n_rows)


def load_bundle(path: Path) -> Bundle:
    """Load and check a bundle directory; raises BundleError (or the loader's error) when it is unusable."""
    # Resolved once: `path` may be a link that deploy or rollback switches meanwhile, and every file
    # must come from the same release.
    path = Path(path).resolve()
    meta_path = path / "bundle.json"
    if not meta_path.is_file():
        raise BundleError(f"no bundle.json in {path}: not a serving bundle")
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta, dict) or not isinstance(meta.get("model_version"), str):
        raise BundleError(f"{meta_path}: needs a string model_version, got {meta!r:.200}")
    model = load_model(path / "model", device="cpu")
    missing = set(model.required_inputs) - SERVED_INPUTS
    if missing:
        raise BundleError(
            f"model {model.spec.name!r} needs batch keys {sorted(missing)} that serving does not build"
        )
    try:
        lengths = model.sequence_lengths()
    except ValueError as err:
        raise BundleError(f"model spec: {err}") from None
    seq_len = lengths["hist"]
    vocab = {entity: _read_vocab(path / "vocab" / f"{entity}.parquet") for entity in VOCAB_ENTITIES}
    inputs = frozenset(model.required_inputs) | (frozenset(model.optional_inputs) & SERVED_INPUTS)
    n_items = model.spec.vocab_sizes.get("item", 0)
    items_path = path / "items.parquet"
    item_category = _item_categories(items_path, n_items)
    bundle = Bundle(
        path=path,
        model=model,
        model_version=meta["model_version"],
        run_id=str(meta.get("run_id", "")),
        metrics=dict(meta.get("metrics") or {}),
        seq_len=seq_len,
        lengths=lengths,
        inputs=inputs,
        user_index=vocab["user"],
        item_index=vocab["item"],
        item_category=item_category,
        vocab_sizes=dict(model.spec.vocab_sizes),
        item_price=_item_prices(items_path, n_items) if "item_dense" in inputs else np.zeros(0),
        feast_dir=(path / FEAST_LINK).resolve() if (path / FEAST_LINK).is_dir() else None,
        feature_service=str((meta.get("feature_store") or {}).get("feature_service", "")),
    )
    log.info(
        "loaded bundle %s (%s, model %s, seq_len %d)", path, bundle.model_version, model.spec.name, seq_len
    )
    return bundle
