"""The Beam steps of ingest: DoFns, CombineFns and the output writers the graph maps over.

The work inside them is plain functions over Arrow tables and numpy arrays (`dedupe`, `vocab`,
`side_tables`, `splits`, `shards`, `item_stats`). Each call handles a whole batch (a task's
events, a dedup bucket, a user shard), never a single event: per-element Beam overhead is paid per
batch, and per-user work runs as vectorized numpy over every user of a shard at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.pvalue import TaggedOutput

from components.ingest import exchange
from components.ingest.dedupe import dedup, dedup_keys, user_shards
from components.ingest.item_stats import item_day_counts, item_stats, merge_item_days
from components.ingest.reasons import REASONS
from components.ingest.records import CLEAN, dead_letters, normalize
from components.ingest.shards import NO_LIMIT, build_shard, encode
from components.ingest.side_tables import SideTables, side_outputs
from components.ingest.sources import ReadTask, read_task
from components.ingest.splits import split_bounds, time_range
from components.ingest.vocab import Ids, Lookup, Vocab, collect_ids, merge_ids, vocab_tables
from seqrank.config import IngestConfig
from seqrank.schema import VOCAB_ENTITIES

DEAD, STATS, ITEM_DAYS, IDS, SPAN = "dead", "stats", "item_days", "ids", "span"
_EXAMPLE_DICT = ["category", "label", "position", "split", "session"]


class ParseTask(beam.DoFn):
    """Read and check one task; accepted events go to a task file partitioned by dedup bucket.

    Rejected records leave through the dead-letter output. The main output is one
    (bucket, task file) reference per bucket that got rows.
    """

    def __init__(self, now_ms: int, n_buckets: int, min_ts_ms: int, scratch: str) -> None:
        self._now_ms = now_ms
        self._n_buckets = n_buckets
        self._min_ts_ms = min_ts_ms
        self._scratch = scratch

    def process(self, task: ReadTask) -> Iterator[Any]:
        raws = read_task(task)
        checked = [normalize(raw, task, self._now_ms, self._min_ts_ms) for raw in raws]
        counts = np.zeros(len(REASONS) + 1, np.int64)
        for c in checked:
            counts += np.bincount(c.codes, minlength=len(REASONS) + 1)
        stats = {"read": sum(raw.n for raw in raws)}
        stats.update({f"rejected.{reason}": int(counts[code]) for code, reason in enumerate(REASONS, 1)})
        yield TaggedOutput(STATS, stats)
        if counts[1:].any():
            rows = [
                row for raw, c in zip(raws, checked, strict=True) for row in dead_letters(raw, c, task.path)
            ]
            yield TaggedOutput(DEAD, (task.index, rows))
        events = pa.concat_tables([c.events for c in checked]) if checked else CLEAN.empty_table()
        if events.num_rows == 0:
            return
        path = exchange.join(self._scratch, f"task-{task.index:05d}.arrow")
        keys = dedup_keys(events, self._n_buckets)
        for bucket in exchange.write_partitions(events, keys, self._n_buckets, path):
            yield bucket, path


class DedupBucket(beam.DoFn):
    """Drop a bucket's duplicates; summarize its unique events and file them by user shard."""

    def __init__(self, n_shards: int, scratch: str) -> None:
        self._n_shards = n_shards
        self._scratch = scratch

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        bucket, paths = element
        # In task order, which is input order, whichever order the references arrived in.
        events = exchange.read_partition(sorted(paths), bucket, CLEAN)
        unique, duplicates = dedup([events])
        yield TaggedOutput(STATS, {"duplicates": duplicates})
        if unique.num_rows == 0:
            return
        yield TaggedOutput(IDS, collect_ids(unique))
        yield TaggedOutput(SPAN, time_range(unique))
        path = exchange.join(self._scratch, f"bucket-{bucket:05d}.arrow")
        keys = user_shards(unique, self._n_shards)
        for shard in exchange.write_partitions(unique, keys, self._n_shards, path):
            yield shard, path


class BuildShard(beam.DoFn):
    """Per-user outputs of one shard, written as part-<shard>.parquet in behaviors/ and examples/."""

    def __init__(
        self, out: str, cfg: IngestConfig, split_mode: str, run_window: tuple[int, int] = NO_LIMIT
    ) -> None:
        self._out = out
        self._run_window = run_window
        self._gap_ms = int(cfg.session_gap_minutes * 60_000)
        self._window_ms = int(cfg.attribution_window_minutes * 60_000)
        self._fractions = (cfg.valid_fraction, cfg.test_fraction)
        self._split_mode = split_mode
        self._lookup: Lookup | None = None

    def setup(self) -> None:
        self._lookup = Lookup()

    def process(
        self, element: tuple[int, Iterable[str | None]], vocab: Vocab, span: tuple[int, int] | None
    ) -> Iterator[Any]:
        assert self._lookup is not None
        shard, paths = element
        events = exchange.read_partition(sorted(p for p in paths if p is not None), shard, CLEAN)
        encoded = encode(events, vocab, self._lookup)
        del events
        # Counted here, where each unique event exists once, so item statistics need no shuffle of
        # their own.
        # Item statistics as of the window's end, like the history.
        before_end = pc.less(encoded.column("ts"), self._run_window[1])
        yield TaggedOutput(ITEM_DAYS, item_day_counts(encoded.filter(before_end)))
        bounds = split_bounds(*span, *self._fractions) if span is not None else None
        result = build_shard(
            [encoded], bounds, self._gap_ms, self._window_ms, self._split_mode, self._run_window
        )
        name = f"part-{shard:05d}.parquet"
        exchange.write_parquet(result.behaviors, exchange.join(self._out, "behaviors", name))
        # Dictionary pages only where values repeat: ids and timestamps would fill a dictionary,
        # have it thrown away, and cost twice the time.
        exchange.write_parquet(
            result.examples, exchange.join(self._out, "examples", name), use_dictionary=_EXAMPLE_DICT
        )
        yield result.stats


class IdsCombine(beam.CombineFn):
    def create_accumulator(self) -> list[Ids]:
        return []

    def add_input(self, acc: list[Ids], ids: Ids) -> list[Ids]:
        acc.append(ids)
        return [merge_ids(acc)] if len(acc) > 16 else acc

    def merge_accumulators(self, accs: Iterable[list[Ids]]) -> list[Ids]:
        return [merge_ids([ids for acc in accs for ids in acc])]

    def extract_output(self, acc: list[Ids]) -> Ids:
        return merge_ids(acc)


class ItemDaysCombine(beam.CombineFn):
    def create_accumulator(self) -> list[pa.Table]:
        return []

    def add_input(self, acc: list[pa.Table], counts: pa.Table) -> list[pa.Table]:
        acc.append(counts)
        return [merge_item_days(acc)] if len(acc) > 16 else acc

    def merge_accumulators(self, accs: Iterable[list[pa.Table]]) -> list[pa.Table]:
        return [merge_item_days([t for acc in accs for t in acc])]

    def extract_output(self, acc: list[pa.Table]) -> pa.Table:
        return merge_item_days(acc)


def write_item_stats(counts: pa.Table, out: str) -> dict[str, int]:
    stats = item_stats(counts)
    exchange.write_parquet(stats, exchange.join(out, "item_stats", "part-00000.parquet"))
    return {"item_stats_rows": stats.num_rows}


class TimeRangeCombine(beam.CombineFn):
    def create_accumulator(self) -> tuple[int, int] | None:
        return None

    def add_input(self, acc: tuple[int, int] | None, span: tuple[int, int] | None) -> tuple[int, int] | None:
        if span is None:
            return acc
        if acc is None:
            return span
        return min(acc[0], span[0]), max(acc[1], span[1])

    def merge_accumulators(self, accs: Iterable[tuple[int, int] | None]) -> tuple[int, int] | None:
        merged = None
        for acc in accs:
            merged = self.add_input(merged, acc)
        return merged

    def extract_output(self, acc: tuple[int, int] | None) -> tuple[int, int] | None:
        return acc


class SumStats(beam.CombineFn):
    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, acc: dict[str, int], stats: dict[str, int]) -> dict[str, int]:
        for key, value in stats.items():
            acc[key] = acc.get(key, 0) + value
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, int]]) -> dict[str, int]:
        merged: dict[str, int] = {}
        for acc in accs:
            self.add_input(merged, acc)
        return merged

    def extract_output(self, acc: dict[str, int]) -> dict[str, int]:
        return acc


def write_dead_letters(element: tuple[int, list[dict]], directory: str) -> None:
    index, rows = element
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    exchange.write_bytes(exchange.join(directory, f"part-{index:05d}.jsonl"), text.encode("utf-8"))


def write_vocab_outputs(vocab: Vocab, side: SideTables, out: str) -> dict[str, int]:
    for entity, table in vocab_tables(vocab).items():
        exchange.write_parquet(table, exchange.join(out, "vocab", f"{entity}.parquet"))
    users, items = side_outputs(vocab, side)
    exchange.write_parquet(users, exchange.join(out, "users", "part-00000.parquet"))
    exchange.write_parquet(items, exchange.join(out, "items", "part-00000.parquet"))
    stats = {"users_table_rows": users.num_rows, "items_table_rows": items.num_rows}
    for entity in VOCAB_ENTITIES:
        stats[f"vocab.{entity}"] = vocab.size(entity)
        stats[f"vocab_new.{entity}"] = vocab.size(entity) - vocab.previous_size[entity]
    stats["items_seen"] = len(vocab.ids.item)
    return stats
