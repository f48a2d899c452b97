"""The Beam ingest graph: raw logs -> behaviors, examples, vocab, side tables, dead letters.

Graph (elements are references to Arrow files of many events and per-batch summaries, never
single events):

    read tasks ─ParseTask─► task file by dedup bucket ─GroupByKey─DedupBucket─► bucket file by user shard
        └─► dead letters (tagged)                          ├─► ids ─CombineGlobally─► vocab (side input)
                                                           └─► time range ─CombineGlobally─► (side input)
    bucket files by user shard ─GroupByKey─BuildShard(vocab, time range)─► behaviors, examples parquet
                                               └─► item-day counts ─CombineGlobally─► item_stats

The event rows themselves move between stages as partitioned Arrow IPC files in the step's
scratch directory (`exchange.py`): Beam groups the references, each stage memory-maps the
partitions it needs. Every counter flows into one stats element, so
`read == accepted + rejected + duplicates` is checked on what the pipeline actually did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsSingleton

from components.ingest.beam_stages import (
    DEAD,
    IDS,
    ITEM_DAYS,
    SPAN,
    STATS,
    BuildShard,
    DedupBucket,
    IdsCombine,
    ItemDaysCombine,
    ParseTask,
    SumStats,
    TimeRangeCombine,
    write_dead_letters,
    write_item_stats,
    write_vocab_outputs,
)
from components.ingest.records import MIN_TS_MS
from components.ingest.side_tables import SideTables, load_side_tables
from components.ingest.sources import ReadTask
from components.ingest.vocab import build_vocab, load_vocab_dir
from seqrank.config import IngestConfig

WORK = "_work"  # pipeline scratch inside the temp output: event files, stats, time range; removed at the end


def _write_json(value: Any, path: str) -> None:
    Path(path).write_text(json.dumps(value))


def _load_side(_: Any, users: str | None, items: str | None) -> SideTables:
    return load_side_tables(users, items)


def _load_previous(_: Any, vocab_dir: str | None) -> dict:
    return load_vocab_dir(vocab_dir)


def _empty_shard(shard: int) -> tuple[int, None]:
    return shard, None


def build_pipeline(
    p: beam.Pipeline,
    tasks: list[ReadTask],
    out: Path,
    cfg: IngestConfig,
    *,
    users: Path | None,
    items: Path | None,
    vocab_dir: Path | None,
    now_ms: int,
    n_shards: int,
    n_buckets: int,
    min_ts_ms: int = MIN_TS_MS,
    split_mode: str = "time",
) -> None:
    """Add the ingest graph to `p`; outputs land under `out` (the step's temp directory)."""
    work = out / WORK
    tasks_dir, buckets_dir = work / "tasks", work / "buckets"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    buckets_dir.mkdir(parents=True, exist_ok=True)

    parsed = (
        p
        | "ReadTasks" >> beam.Create(tasks)
        | "ParseAndCheck"
        >> beam.ParDo(ParseTask(now_ms, n_buckets, min_ts_ms, str(tasks_dir))).with_outputs(
            DEAD, STATS, main="files"
        )
    )
    _ = parsed[DEAD] | "WriteDeadLetters" >> beam.Map(write_dead_letters, str(out / "dead_letter"))

    deduped = (
        parsed.files
        | "GroupByEventKey" >> beam.GroupByKey()
        | "DropDuplicates"
        >> beam.ParDo(DedupBucket(n_shards, str(buckets_dir))).with_outputs(STATS, IDS, SPAN, main="files")
    )

    side = (
        p
        | "SideTablesSeed" >> beam.Create([None], reshuffle=False)
        | "LoadSideTables"
        >> beam.Map(_load_side, str(users) if users else None, str(items) if items else None)
    )
    previous = (
        p
        | "VocabSeed" >> beam.Create([None], reshuffle=False)
        | "LoadPreviousVocab" >> beam.Map(_load_previous, str(vocab_dir) if vocab_dir else None)
    )
    vocab = (
        deduped[IDS]
        | "UnionIds" >> beam.CombineGlobally(IdsCombine())
        | "BuildVocab" >> beam.Map(build_vocab, AsSingleton(previous), AsSingleton(side))
    )
    vocab_stats = vocab | "WriteVocabUsersItems" >> beam.Map(write_vocab_outputs, AsSingleton(side), str(out))

    span = deduped[SPAN] | "TimeRange" >> beam.CombineGlobally(TimeRangeCombine())
    _ = span | "WriteTimeRange" >> beam.Map(_write_json, str(work / "time_range.json"))

    every_shard = (
        p
        | "ShardIds" >> beam.Create(range(n_shards), reshuffle=False)
        | "EmptyShards" >> beam.Map(_empty_shard)
    )
    shards = (
        (deduped.files, every_shard)
        | "AllShards" >> beam.Flatten()
        | "GroupByUserShard" >> beam.GroupByKey()
        | "BuildBehaviorsExamples"
        >> beam.ParDo(
            BuildShard(str(out), cfg, split_mode), AsSingleton(vocab), AsSingleton(span)
        ).with_outputs(ITEM_DAYS, main="stats")
    )
    item_stats = (
        shards[ITEM_DAYS]
        | "SumItemDays" >> beam.CombineGlobally(ItemDaysCombine())
        | "WriteItemStats" >> beam.Map(write_item_stats, str(out))
    )

    _ = (
        (parsed[STATS], deduped[STATS], shards.stats, vocab_stats, item_stats)
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(SumStats())
        | "WriteStats" >> beam.Map(_write_json, str(work / "stats.json"))
    )
