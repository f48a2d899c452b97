"""Load an ingest output into numpy arrays: examples, CSR behaviors, vocab sizes and item features."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seqrank.schema import (
    BEHAVIORS,
    EXAMPLES,
    ITEM_STATS,
    ITEMS,
    PAD,
    SPLITS,
    VOCAB,
    VOCAB_ENTITIES,
    check_schema,
)
from seqrank.storage import read_json
from training.dense import dense_features, price_table

log = logging.getLogger(__name__)

REQUIRED_VOCABS = ("user", "item", "category")

_EXAMPLE_COLUMNS = ("user", "item", "category", "ts", "label", "position", "split", "hist_end", "session")
_BEHAVIOR_COLUMNS = ("user", "item", "category", "ts")


@dataclass(frozen=True)
class Examples:
    """Labeled impressions as parallel columns, all of length N."""

    user: np.ndarray  # (N,) int64 user index; also the row of the user's behaviors
    item: np.ndarray  # (N,) int64
    category: np.ndarray  # (N,) int64
    ts: np.ndarray  # (N,) int64 epoch ms
    label: np.ndarray  # (N,) float32 in {0, 1}
    hist_end: np.ndarray  # (N,) int64: the user's behaviors strictly before ts
    position: np.ndarray  # (N,) int32
    session: np.ndarray  # (N,) int32
    split: np.ndarray  # (N,) int8 index into seqrank.schema.SPLITS

    def __post_init__(self) -> None:
        lengths = {f.name: len(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"example columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray | slice) -> Examples:
        """The examples at `index` (an index array, boolean mask or slice)."""
        return Examples(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class Behaviors:
    """Every user's behaviors in time order, as CSR arrays.

    User u's behaviors are `item[offsets[u]:offsets[u + 1]]` (likewise `category`, `ts`). Position 0
    of the flat arrays is a PAD sentinel that belongs to no user, so offsets start at 1 and a
    gather can send every padded slot to index 0 instead of masking each column separately.
    """

    offsets: np.ndarray  # (U + 1,) int64, offsets[0] == 1
    item: np.ndarray  # (1 + E,) int64, item[0] == PAD
    category: np.ndarray  # (1 + E,) int64
    ts: np.ndarray  # (1 + E,) int64

    def __post_init__(self) -> None:
        if len(self.offsets) < 1 or self.offsets[0] != 1:
            raise ValueError("behavior offsets must start at 1 (flat position 0 is the PAD sentinel)")
        size = int(self.offsets[-1])
        for name in ("item", "category", "ts"):
            column = getattr(self, name)
            if len(column) != size:
                raise ValueError(f"behaviors.{name} has {len(column)} entries, offsets say {size}")
            if column[0] != PAD:
                raise ValueError(f"behaviors.{name}[0] = {column[0]}: must be the PAD sentinel {PAD}")

    @classmethod
    def from_lists(
        cls, users: np.ndarray, lengths: np.ndarray, columns: Mapping[str, np.ndarray], num_users: int
    ) -> Behaviors:
        """Build CSR arrays from per-row lists: row r is user `users[r]` with `lengths[r]` behaviors.

        Args:
            users: (R,) user index of each row; each user at most once.
            lengths: (R,) behaviors per row.
            columns: "item", "category", "ts" → (sum(lengths),) values, row after row.
            num_users: U, rows of the offsets table (the user vocab size).
        """
        users = np.asarray(users, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        if len(users) and (users.min() < 0 or users.max() >= num_users):
            raise ValueError(f"behaviors.user holds indices outside [0, {num_users}) (the user vocab)")
        if len(np.unique(users)) != len(users):
            raise ValueError("behaviors holds more than one row for a user; expected one row per user")
        per_user = np.zeros(num_users, dtype=np.int64)
        per_user[users] = lengths
        offsets = np.empty(num_users + 1, dtype=np.int64)
        offsets[0] = 1
        np.cumsum(per_user, out=offsets[1:])
        offsets[1:] += 1
        # Reorder the row-major values into user order: rows sorted by user, each row's range copied.
        order = np.argsort(users, kind="stable")
        row_start = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(lengths) else lengths
        sorted_lengths = lengths[order]
        new_start = np.concatenate(([0], np.cumsum(sorted_lengths)[:-1])) if len(order) else sorted_lengths
        total = int(lengths.sum())
        source = np.repeat(row_start[order] - new_start, sorted_lengths) + np.arange(total)
        flat = {}
        for name in ("item", "category", "ts"):
            values = np.asarray(columns[name], dtype=np.int64)
            if len(values) != total:
                raise ValueError(f"behaviors.{name} holds {len(values)} values, the lists add up to {total}")
            flat[name] = np.concatenate(([PAD], values[source]))
        return cls(offsets=offsets, **flat)

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    def lengths(self, users: np.ndarray) -> np.ndarray:
        """Number of behaviors of each user in `users`."""
        return self.offsets[users + 1] - self.offsets[users]

    def history_index(self, users: np.ndarray, hist_end: np.ndarray, seq_len: int) -> np.ndarray:
        """Flat positions of each example's last `seq_len` behaviors before `hist_end`.

        Returns (B, seq_len) int64, right-aligned: column -1 is behavior hist_end − 1; columns
        before the user's first behavior point at the PAD sentinel 0. Never reaches hist_end.
        """
        start = self.offsets[users]  # (B,)
        index = (start + hist_end)[:, None] + np.arange(-seq_len, 0)  # (B, L)
        index[index < start[:, None]] = 0
        return index

    @functools.cached_property
    def _category_index(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        # The user → category → behaviors index: flat positions ordered by (user, category, time),
        # with the sort key of each, so one searchsorted finds any (user, category, before) range.
        positions = np.arange(1, len(self.item), dtype=np.int64)
        user = np.repeat(np.arange(self.num_users, dtype=np.int64), np.diff(self.offsets))
        stride = int(np.diff(self.offsets).max(initial=0)) + 1  # > any position within a user
        categories = int(self.category.max(initial=0)) + 1
        keys = (user * categories + self.category[1:]) * stride + (positions - self.offsets[user])
        order = np.argsort(keys, kind="stable")
        return keys[order], positions[order], stride, categories

    def category_index(
        self, users: np.ndarray, categories: np.ndarray, hist_end: np.ndarray, k: int
    ) -> np.ndarray:
        """Flat positions of each example's last `k` behaviors in `categories` before `hist_end`.

        SIM's hard search, the same rows the Feast user_category_behavior view holds for "now".
        Returns (B, k) int64, right-aligned, PAD sentinel 0 where the user has fewer.
        """
        keys, positions, stride, num_categories = self._category_index
        categories = np.asarray(categories, dtype=np.int64)
        known = (categories >= 0) & (categories < num_categories)
        base = (users * num_categories + np.where(known, categories, 0)) * stride
        begin = np.searchsorted(keys, base, side="left")
        end = np.where(known, np.searchsorted(keys, base + hist_end, side="left"), begin)
        index = end[:, None] + np.arange(-k, 0)  # (B, k) into the sorted index
        valid = index >= begin[:, None]
        return np.where(valid, positions[np.where(valid, index, 0)], 0)


@dataclass(frozen=True)
class IngestData:
    """An ingest output in memory: examples of every split, behaviors, vocab sizes, manifest.

    `vocab_sizes` is what batches must respect: ids at or above it become PAD (see `restricted_to`).
    `item_dense` (prices and item statistics for the `item_dense` batch key) is read from `path` on
    first use, unless `dense` already holds it.
    """

    examples: Examples
    behaviors: Behaviors
    vocab_sizes: dict[str, int]  # entity -> rows including PAD (max index + 1)
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    dense: ItemDense | None = None  # in-memory item prices and statistics snapshots

    def __post_init__(self) -> None:
        if len(self.examples) == 0:
            raise ValueError(f"no examples in {self.path or 'the data'}: nothing to train or evaluate on")
        missing = [e for e in REQUIRED_VOCABS if e not in self.vocab_sizes]
        if missing:
            raise ValueError(f"vocab sizes missing for {missing}; have {sorted(self.vocab_sizes)}")
        if self.behaviors.num_users < self.vocab_sizes["user"]:
            raise ValueError(
                f"behaviors cover {self.behaviors.num_users} users, the user vocab has {self.vocab_sizes['user']}"
            )
        ex = self.examples
        for name in ("user", "item", "category"):
            column = getattr(ex, name)
            if column.min() < 0:
                raise ValueError(f"examples.{name} holds a negative index {column.min()}")
        if ex.user.max() >= self.behaviors.num_users:
            raise ValueError(
                f"examples.user holds index {ex.user.max()}, behaviors cover {self.behaviors.num_users} users"
            )
        available = self.behaviors.lengths(ex.user)
        bad = (ex.hist_end < 0) | (ex.hist_end > available)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{int(bad.sum())} examples have hist_end outside [0, behaviors of their user], e.g. row "
                f"{row}: user {ex.user[row]} has {available[row]} behaviors, hist_end = {ex.hist_end[row]}"
            )

    @functools.cached_property
    def max_ids(self) -> dict[str, int]:
        """Largest index present per entity, over examples and behaviors."""
        b = self.behaviors
        return {
            "user": int(self.examples.user.max()),
            "item": int(max(self.examples.item.max(), b.item.max())),
            "category": int(max(self.examples.category.max(), b.category.max())),
        }

    @functools.cached_property
    def item_dense(self) -> ItemDense:
        """Item prices and statistics snapshots: `dense`, else items/ and item_stats/ under `path`;
        data with neither has unknown prices and no statistics for every item."""
        if self.dense is not None:
            return self.dense
        if self.path is None:
            log.warning("in-memory data without item features: item_dense holds unknown prices only")
            return ItemDense(np.full(self.vocab_sizes["item"], np.nan))
        return load_item_dense(self.path, self.vocab_sizes["item"])

    def split(self, name: str) -> Examples:
        """The examples of split `name` (train, valid or test); ValueError when it has none."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        rows = self.examples.split == SPLITS.index(name)
        if not rows.any():
            raise ValueError(f"split {name!r} has no examples in {self.path or 'the data'}")
        return self.examples.take(rows)

    def restricted_to(self, vocab_sizes: Mapping[str, int]) -> IngestData:
        """The same data for a model built on smaller vocabularies: ids it never saw become PAD.

        Used to score an older model (the champion) on data whose vocab has grown since.
        """
        sizes = dict(self.vocab_sizes)
        for entity, size in vocab_sizes.items():
            if entity in sizes:
                sizes[entity] = min(sizes[entity], int(size))
        return dataclasses.replace(self, vocab_sizes=sizes)


def id_counts(data: IngestData) -> dict[str, np.ndarray]:
    """Occurrences of every index per entity (user, item, category) in the train examples and the
    behaviors, each array as long as the entity's vocab; what frequency-aware embeddings fit on.

    Only train-split examples count, so the counts hold nothing from valid or test impressions.
    """
    train = data.examples.split == SPLITS.index("train")
    b = data.behaviors
    counts = {}
    for entity in REQUIRED_VOCABS:
        size = data.vocab_sizes[entity]
        flat = getattr(data.examples, entity)[train]
        if entity != "user":
            flat = np.concatenate([flat, getattr(b, entity)[1:]])
        counts[entity] = np.bincount(flat[flat < size], minlength=size)
    counts["user"] += np.diff(b.offsets)[: data.vocab_sizes["user"]]  # a user's behaviors count too
    return counts


class ItemDense:
    """Item prices and statistics snapshots in memory, with a vectorized point-in-time lookup.

    Args:
        price: (I,) float64 price by item index; NaN where unknown. Items past I are unknown.
        stats: an ITEM_STATS table (item, ts, ..., impressions_total, clicks_total), any order.

    A snapshot stamped `ts` counts events strictly before `ts` (seqrank.schema.ITEM_STATS), so
    an impression at time t may read the latest snapshot with ts <= t — Feast's point-in-time
    rule — and never a later one.
    """

    def __init__(self, price: np.ndarray, stats: pa.Table | None = None) -> None:
        self.price = np.asarray(price, dtype=np.float64)
        if stats is None:
            stats = ITEM_STATS.empty_table()
        stats = stats.sort_by([("item", "ascending"), ("ts", "ascending")])
        self.stats_item = stats.column("item").to_numpy().astype(np.int64, copy=False)
        self.stats_ts = stats.column("ts").to_numpy().astype(np.int64, copy=False)
        self.impressions = stats.column("impressions_total").to_numpy().astype(np.int64, copy=False)
        self.clicks = stats.column("clicks_total").to_numpy().astype(np.int64, copy=False)
        # Epoch-ms stamps times item indices would overflow int64, so snapshots are keyed by
        # item · (T + 1) + (rank of their ts among the T distinct stamps, 1-based).
        self._stamps = np.unique(self.stats_ts)
        self._stride = len(self._stamps) + 1
        self._keys = self.stats_item * self._stride + np.searchsorted(self._stamps, self.stats_ts) + 1

    def statistics(self, items: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(impressions_total, clicks_total) of each item's latest snapshot with ts <= the given
        ts, zeros when it has none: (B,), (B,) → (B,) int64 each."""
        items = np.asarray(items, dtype=np.int64)
        if not len(self._keys):
            return np.zeros(len(items), np.int64), np.zeros(len(items), np.int64)
        # Distinct stamps <= ts: a snapshot of the same item qualifies iff its rank is <= this.
        rank = np.searchsorted(self._stamps, np.asarray(ts, dtype=np.int64), side="right")
        found = np.searchsorted(self._keys, items * self._stride + rank, side="right") - 1
        safe = np.maximum(found, 0)
        hit = (found >= 0) & (self.stats_item[safe] == items)
        return np.where(hit, self.impressions[safe], 0), np.where(hit, self.clicks[safe], 0)

    def prices(self, items: np.ndarray) -> np.ndarray:
        """Price of each item (B,) float64, NaN when unknown."""
        items = np.asarray(items, dtype=np.int64)
        inside = (items >= 0) & (items < len(self.price))
        return np.where(inside, self.price[np.where(inside, items, 0)], np.nan)

    def features(self, items: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """`item_dense` of candidates `items` shown at `ts`: (B,), (B,) → (B, F) float32."""
        impressions, clicks = self.statistics(items, ts)
        return dense_features(self.prices(items), impressions, clicks)


def load_item_dense(path: Path | str, num_items: int = 0) -> ItemDense:
    """Read items/ and item_stats/ of an ingest output directory; either may be absent (an older
    ingest, or a data set without prices), and then reads as unknown prices / no snapshots."""
    path = Path(path)
    items_dir, stats_dir = path / "items", path / "item_stats"
    if items_dir.exists():
        items = pq.read_table(items_dir, columns=["item", "price"])
        check_schema(items, pa.schema([ITEMS.field("item"), ITEMS.field("price")]), str(items_dir))
        price = price_table(items, num_items)
    else:
        log.warning("no %s: item_dense holds unknown prices", items_dir)
        price = np.full(num_items, np.nan)
    stats = None
    if stats_dir.exists():
        stats = pq.read_table(stats_dir, columns=ITEM_STATS.names)
        check_schema(stats, ITEM_STATS, str(stats_dir))
        stats = stats.cast(ITEM_STATS)
    else:
        log.warning("no %s: item_dense holds no CTR statistics", stats_dir)
    return ItemDense(price, stats)


def _read_columns(path: Path, schema: pa.Schema, columns: tuple[str, ...]) -> pa.Table:
    # Read only the columns training uses (examples also carry string ids), checked against the contract.
    if not path.exists():
        raise FileNotFoundError(f"no data at {path}")
    wanted = pa.schema([schema.field(name) for name in columns])
    table = pq.read_table(path, columns=list(columns))
    check_schema(table, wanted, str(path))
    table = table.cast(wanted)
    for name in columns:
        if table.column(name).null_count:
            raise ValueError(f"{path}: column {name!r} holds {table.column(name).null_count} nulls")
    return table


def _flat_list(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    lists = table.column(name).combine_chunks()
    return (
        pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64),
        pc.list_flatten(lists).to_numpy(zero_copy_only=False),
    )


def _vocab_sizes(path: Path) -> dict[str, int]:
    sizes = {}
    for entity in VOCAB_ENTITIES:
        file = path / "vocab" / f"{entity}.parquet"
        if not file.exists():
            if entity in REQUIRED_VOCABS:
                raise FileNotFoundError(f"no vocab for {entity!r} at {file}")
            continue
        table = _read_columns(file, VOCAB, ("index",))
        index = table.column("index").to_numpy()
        sizes[entity] = int(index.max()) + 1 if len(index) else 1
    return sizes


def load_ingest(path: Path | str) -> IngestData:
    """Read an ingest output directory (examples/, behaviors/, vocab/, manifest.json) into memory."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no ingest output at {path}")
    vocab_sizes = _vocab_sizes(path)

    table = _read_columns(path / "examples", EXAMPLES, _EXAMPLE_COLUMNS)
    if table.num_rows == 0:
        raise ValueError(f"{path / 'examples'} holds no rows: nothing to train or evaluate on")
    split_code = pc.index_in(table.column("split"), value_set=pa.array(SPLITS))
    if split_code.null_count:
        unknown = pc.unique(pc.filter(table.column("split"), pc.is_null(split_code))).to_pylist()
        raise ValueError(f"examples.split holds {unknown}; expected one of {', '.join(SPLITS)}")

    def column(name: str, dtype: type) -> np.ndarray:
        return table.column(name).to_numpy().astype(dtype, copy=False)

    examples = Examples(
        user=column("user", np.int64),
        item=column("item", np.int64),
        category=column("category", np.int64),
        ts=column("ts", np.int64),
        label=column("label", np.float32),
        hist_end=column("hist_end", np.int64),
        position=column("position", np.int32),
        session=column("session", np.int32),
        split=split_code.to_numpy().astype(np.int8),
    )
    for name, entity in (("user", "user"), ("item", "item"), ("category", "category")):
        _check_ids(getattr(examples, name), vocab_sizes[entity], f"examples.{name}")

    behaviors_table = _read_columns(path / "behaviors", BEHAVIORS, _BEHAVIOR_COLUMNS)
    lengths, items = _flat_list(behaviors_table, "item")
    flat = {"item": items}
    for name in ("category", "ts"):
        other_lengths, flat[name] = _flat_list(behaviors_table, name)
        if not np.array_equal(lengths, other_lengths):
            raise ValueError(f"{path / 'behaviors'}: lists in column {name!r} differ in length from 'item'")
    _check_ids(flat["item"], vocab_sizes["item"], "behaviors.item")
    _check_ids(flat["category"], vocab_sizes["category"], "behaviors.category")
    behaviors = Behaviors.from_lists(
        behaviors_table.column("user").to_numpy(), lengths, flat, num_users=vocab_sizes["user"]
    )

    manifest_file = path / "manifest.json"
    manifest = read_json(manifest_file) if manifest_file.exists() else {}
    return IngestData(examples, behaviors, vocab_sizes, manifest, path)


def _check_ids(values: np.ndarray, size: int, what: str) -> None:
    if len(values) and (values.min() < 0 or values.max() >= size):
        bad = values.min() if values.min() < 0 else values.max()
        raise ValueError(f"{what} holds index {bad}, outside the vocab [0, {size})")
