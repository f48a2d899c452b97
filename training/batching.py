"""Cut loaded examples into training batches (no per-sample Dataset), keyed as `training.batch` defines.

A batch slices the example columns by index and gathers each example's last `seq_len` behaviors
before `hist_end` with one fancy-indexing call, right-aligned and PAD-padded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from seqrank.schema import PAD
from training.batch import (
    BATCH_KEYS,
    CATEGORY_KEYS,
    DEFAULT_LONG,
    DEFAULT_SEARCH_K,
    EXAMPLE_KEYS,
    HISTORY_KEYS,
    KEY_ENTITY,
    LONG_KEYS,
    SEQUENCE_BATCH_KEYS,
    SEQUENCE_LENGTHS,
)
from training.ingest_data import Examples, IngestData

if TYPE_CHECKING:
    from training.models import CtrModel


class BatchBuilder:
    """Slices examples into batches of tensors: example columns by index, histories by CSR gather.

    Args:
        data: the loaded ingest output (behaviors and vocab limits).
        seq_len: L, history positions per example; or a mapping of positions per sequence group
            (`sequence_lengths`: hist, long, cat).
        keys: batch keys to build (a subset of BATCH_KEYS); build only what the model reads.
    """

    def __init__(
        self, data: IngestData, seq_len: int | Mapping[str, int], keys: Iterable[str] = SEQUENCE_BATCH_KEYS
    ) -> None:
        lengths = dict(seq_len) if isinstance(seq_len, Mapping) else {"hist": seq_len}
        lengths.setdefault("long", DEFAULT_LONG)
        lengths.setdefault("cat", DEFAULT_SEARCH_K)
        for group, length in lengths.items():
            if length is None or length <= 0:
                raise ValueError(f"{SEQUENCE_LENGTHS[group][0]} = {length}: must be > 0")
        self.keys = tuple(keys)
        unknown = [k for k in self.keys if k not in BATCH_KEYS]
        if unknown:
            raise ValueError(f"batch keys {unknown} cannot be built; available: {', '.join(BATCH_KEYS)}")
        self.behaviors = data.behaviors
        self.item_dense = data.item_dense if "item_dense" in self.keys else None
        self.lengths = lengths
        self.seq_len = lengths["hist"]
        # Only entities whose data holds ids beyond the limit need the (cheap but not free) clamp.
        self._limits = {
            entity: size for entity, size in data.vocab_sizes.items() if data.max_ids.get(entity, -1) >= size
        }

    def build(
        self, examples: Examples, index: np.ndarray | slice
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One batch: (tensors keyed as in `keys`, labels (B,) float32)."""
        users = examples.user[index]
        columns: dict[str, np.ndarray] = {}
        for key in self.keys:
            if key in EXAMPLE_KEYS:
                columns[key] = getattr(examples, key)[index]
        hist_end = examples.hist_end[index]
        for group, group_keys in (("hist", HISTORY_KEYS), ("long", LONG_KEYS)):
            wanted = [k for k in self.keys if k in group_keys]
            if wanted:
                flat = self.behaviors.history_index(users, hist_end, self.lengths[group])  # (B, L)
                for key in wanted:
                    columns[key] = getattr(self.behaviors, key.removeprefix(f"{group}_"))[flat]
        wanted = [k for k in self.keys if k in CATEGORY_KEYS]
        if wanted:
            flat = self.behaviors.category_index(
                users, examples.category[index], hist_end, self.lengths["cat"]
            )  # (B, K)
            for key in wanted:
                columns[key] = getattr(self.behaviors, key.removeprefix("cat_"))[flat]
        if self.item_dense is not None:
            # Features of the real item, also when the model's vocab maps it to PAD below.
            columns["item_dense"] = self.item_dense.features(examples.item[index], examples.ts[index])
        for key, values in columns.items():
            limit = self._limits.get(KEY_ENTITY.get(key, ""))
            if limit is not None:
                columns[key] = np.where(values < limit, values, PAD)
        batch = {key: _tensor(values) for key, values in columns.items()}
        return batch, _tensor(examples.label[index])

    def batches(
        self,
        examples: Examples,
        batch_size: int,
        *,
        shuffle: bool = False,
        rng: np.random.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Iterate over `examples` in batches, in order or shuffled with `rng`."""
        if batch_size <= 0:
            raise ValueError(f"batch_size = {batch_size}: must be > 0")
        n = len(examples)
        if n == 0:
            raise ValueError("no examples to batch")
        order = (rng or np.random.default_rng()).permutation(n) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            index = (
                order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
            )
            yield self.build(examples, index)


def _tensor(values: np.ndarray) -> torch.Tensor:
    # A slice is a view of the loaded columns: copy it so a batch never aliases the data set.
    return torch.from_numpy(values if values.flags.owndata else values.copy())


def batch_keys(model: CtrModel) -> tuple[str, ...]:
    """The keys to build for `model`; ValueError when it needs one training batches cannot hold."""
    missing = [key for key in model.required_inputs if key not in BATCH_KEYS]
    if missing:
        raise ValueError(
            f"model {model.spec.name!r} requires batch keys {missing}, which training batches do not "
            f"provide; they provide: {', '.join(BATCH_KEYS)}"
        )
    optional = [
        key for key in model.optional_inputs if key in BATCH_KEYS and key not in model.required_inputs
    ]
    return (*model.required_inputs, *optional)
