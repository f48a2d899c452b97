"""The Beam ingest graph: raw logs -> behaviors, examples, vocab, side tables, dead letters.

Graph (elements are references to Arrow files of many events and per-batch summaries, never
single events):

    read tasks ─ParseTask─► task file by dedup bucket ─GroupByKey─DedupBucket─► bucket file by user shard
        └─► dead letters (tagged)                          ├─► ids ─CombineGlobally─► vocab (side input)
                                                           └─► time range ─CombineGlobally─► (side input)
    bucket files by user shard ─GroupByKey─BuildShard(vocab, time range)─► behaviors, examples parquet
                                               └─► item-day counts ─CombineGlobally─► item_stats

The event rows themselves move between stages as partitioned Arrow IPC files in the step's
scratch folder (`exchange.py`): Beam groups the references, each stage reads the partitions it
needs (memory-mapped when local). Every file a worker writes or reads (exchange files, outputs,
stats, side tables) goes through `exchange`, so the scratch folder and outputs may live on any Beam
file system. Every counter flows into one stats element, so
`read == accepted + rejected + duplicates` is checked on what the pipeline actually did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsSingleton

from components.ingest import exchange
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
from components.ingest.shards import NO_LIMIT, clip_span
from components.ingest.side_tables import SideTables, load_side_tables
from components.ingest.sources import ReadTask
from components.ingest.vocab import build_vocab, load_vocab_dir
from seqrank.config import IngestConfig

WORK = "_work"  # pipeline scratch inside the temp output: event files, stats, time range; removed at the end


def _load_side(_: Any, users: str | None, items: str | None) -> SideTables:
    with exchange.local_copy(users) as local_users, exchange.local_copy(items) as local_items:
        return load_side_tables(local_users, local_items)


def _load_previous(_: Any, vocab_dir: str | None) -> dict:
    with exchange.local_copy(vocab_dir, folder=True) as local:
        return load_vocab_dir(local)


def _empty_shard(shard: int) -> tuple[int, None]:
    return shard, None


def build_pipeline(
    p: beam.Pipeline,
    tasks: list[ReadTask],
    out: Path | str,
    cfg: IngestConfig,
    *,
    users: Path | str | None,
    items: Path | str | None,
    vocab_dir: Path | str | None,
    now_ms: int,
    n_shards: int,
    n_buckets: int,
    min_ts_ms: int = MIN_TS_MS,
    split_mode: str = "time",
    run_window: tuple[int, int] = NO_LIMIT,
) -> None:
    """Add the ingest graph to `p`; outputs land in folders under `out`, which must exist.

    `run_window` [start, end) in epoch ms: a backfill window (see `shards.build_shard`); the time
    range the splits divide is the data's, clipped to it.

    `out` (the step's temp directory, or a folder under `cfg.temp_location`) and the side inputs
    may be local paths or URIs of any Beam file system; the workers must be able to reach them.
    """
    root = str(out)
    work = exchange.join(root, WORK)
    tasks_dir, buckets_dir = exchange.join(work, "tasks"), exchange.join(work, "buckets")
    exchange.mkdirs(tasks_dir)
    exchange.mkdirs(buckets_dir)

    parsed = (
        p
        | "ReadTasks" >> beam.Create(tasks)
        | "ParseAndCheck"
        >> beam.ParDo(ParseTask(now_ms, n_buckets, min_ts_ms, tasks_dir)).with_outputs(
            DEAD, STATS, main="files"
        )
    )
    _ = parsed[DEAD] | "WriteDeadLetters" >> beam.Map(write_dead_letters, exchange.join(root, "dead_letter"))

    deduped = (
        parsed.files
        | "GroupByEventKey" >> beam.GroupByKey()
        | "DropDuplicates"
        >> beam.ParDo(DedupBucket(n_shards, buckets_dir)).with_outputs(STATS, IDS, SPAN, main="files")
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
    vocab_stats = vocab | "WriteVocabUsersItems" >> beam.Map(write_vocab_outputs, AsSingleton(side), root)

    span = (
        deduped[SPAN]
        | "TimeRange" >> beam.CombineGlobally(TimeRangeCombine())
        | "ClipToRunWindow" >> beam.Map(clip_span, run_window)
    )
    _ = span | "WriteTimeRange" >> beam.Map(exchange.write_json, exchange.join(work, "time_range.json"))

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
            BuildShard(root, cfg, split_mode, run_window), AsSingleton(vocab), AsSingleton(span)
        ).with_outputs(ITEM_DAYS, main="stats")
    )
    item_stats = (
        shards[ITEM_DAYS]
        | "SumItemDays" >> beam.CombineGlobally(ItemDaysCombine())
        | "WriteItemStats" >> beam.Map(write_item_stats, root)
    )

    _ = (
        (parsed[STATS], deduped[STATS], shards.stats, vocab_stats, item_stats)
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(SumStats())
        | "WriteStats" >> beam.Map(exchange.write_json, exchange.join(work, "stats.json"))
    )
