"""The Beam ingest pipeline: raw logs -> behaviors, examples, vocab, side tables, dead letters.

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
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import AsSingleton, TaggedOutput

from components.ingest import adapters, exchange
from components.ingest import transforms as tf
from components.ingest.reasons import REASONS
from components.ingest.records import CLEAN, MIN_TS_MS, dead_letters, normalize
from components.ingest.sources import InputFile, ReadTask, plan, read_task
from seqrank.config import IngestConfig
from seqrank.schema import SPLITS, VOCAB_ENTITIES
from seqrank.storage import atomic_dir, file_fingerprint, write_json

log = logging.getLogger(__name__)

DEAD, STATS, ITEM_DAYS, IDS, SPAN = "dead", "stats", "item_days", "ids", "span"
DATA_DIRS = ("behaviors", "examples", "vocab", "users", "items", "item_stats")
_WORK = "_work"  # pipeline scratch inside the temp output: event files, stats, time range; removed at the end
# One user shard and one dedup bucket per this many input bytes: shards are the unit of per-user
# parallelism and of output files, buckets that of duplicate removal, and neither may depend on
# how many workers run or how the input is cut into read tasks.
_PARTITION_BYTES = 32 << 20
_MAX_PARTITIONS = 256
_EXAMPLE_DICT = ["category", "label", "position", "split", "session"]
# Public data sets without impressions, each turned into raw events by its adapter's protocol.
ADAPTERS = {"movielens": adapters.movielens, "taobao": adapters.taobao, "amazon": adapters.amazon}
FORMATS = ("auto", "jsonl", "csv", "parquet", *ADAPTERS)


class IngestRejectedError(RuntimeError):
    """More records were rejected than `max_rejected_share` allows; dead letters and manifest exist."""

    def __init__(self, message: str, manifest: dict[str, Any]) -> None:
        super().__init__(message)
        self.manifest = manifest


# ---- Beam steps ---------------------------------------------------------------------------------


class _ParseTask(beam.DoFn):
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
        path = Path(self._scratch) / f"task-{task.index:05d}.arrow"
        keys = tf.dedup_keys(events, self._n_buckets)
        for bucket in exchange.write_partitions(events, keys, self._n_buckets, path):
            yield bucket, str(path)


class _DedupBucket(beam.DoFn):
    """Drop a bucket's duplicates; summarize its unique events and file them by user shard."""

    def __init__(self, n_shards: int, scratch: str) -> None:
        self._n_shards = n_shards
        self._scratch = scratch

    def process(self, element: tuple[int, Iterable[str]]) -> Iterator[Any]:
        bucket, paths = element
        # In task order, which is input order, whichever order the references arrived in.
        events = exchange.read_partition(sorted(paths), bucket, CLEAN)
        unique, duplicates = tf.dedup([events])
        yield TaggedOutput(STATS, {"duplicates": duplicates})
        if unique.num_rows == 0:
            return
        yield TaggedOutput(IDS, tf.collect_ids(unique))
        yield TaggedOutput(SPAN, tf.time_range(unique))
        path = Path(self._scratch) / f"bucket-{bucket:05d}.arrow"
        keys = tf.user_shards(unique, self._n_shards)
        for shard in exchange.write_partitions(unique, keys, self._n_shards, path):
            yield shard, str(path)


class _BuildShard(beam.DoFn):
    """Per-user outputs of one shard, written as part-<shard>.parquet in behaviors/ and examples/."""

    def __init__(self, out: str, cfg: IngestConfig, split_mode: str) -> None:
        self._out = out
        self._gap_ms = int(cfg.session_gap_minutes * 60_000)
        self._window_ms = int(cfg.attribution_window_minutes * 60_000)
        self._fractions = (cfg.valid_fraction, cfg.test_fraction)
        self._split_mode = split_mode
        self._lookup: tf.Lookup | None = None

    def setup(self) -> None:
        self._lookup = tf.Lookup()

    def process(
        self, element: tuple[int, Iterable[str | None]], vocab: tf.Vocab, span: tuple[int, int] | None
    ) -> Iterator[Any]:
        assert self._lookup is not None
        shard, paths = element
        events = exchange.read_partition(sorted(p for p in paths if p is not None), shard, CLEAN)
        encoded = tf.encode(events, vocab, self._lookup)
        del events
        # Counted here, where each unique event exists once, so item statistics need no shuffle of
        # their own.
        yield TaggedOutput(ITEM_DAYS, tf.item_day_counts(encoded))
        bounds = tf.split_bounds(*span, *self._fractions) if span is not None else None
        result = tf.build_shard([encoded], bounds, self._gap_ms, self._window_ms, self._split_mode)
        name = f"part-{shard:05d}.parquet"
        pq.write_table(result.behaviors, Path(self._out) / "behaviors" / name)
        # Dictionary pages only where values repeat: ids and timestamps would fill a dictionary,
        # have it thrown away, and cost twice the time.
        pq.write_table(result.examples, Path(self._out) / "examples" / name, use_dictionary=_EXAMPLE_DICT)
        yield result.stats


class _IdsCombine(beam.CombineFn):
    def create_accumulator(self) -> list[tf.Ids]:
        return []

    def add_input(self, acc: list[tf.Ids], ids: tf.Ids) -> list[tf.Ids]:
        acc.append(ids)
        return [tf.merge_ids(acc)] if len(acc) > 16 else acc

    def merge_accumulators(self, accs: Iterable[list[tf.Ids]]) -> list[tf.Ids]:
        return [tf.merge_ids([ids for acc in accs for ids in acc])]

    def extract_output(self, acc: list[tf.Ids]) -> tf.Ids:
        return tf.merge_ids(acc)


class _ItemDaysCombine(beam.CombineFn):
    def create_accumulator(self) -> list[pa.Table]:
        return []

    def add_input(self, acc: list[pa.Table], counts: pa.Table) -> list[pa.Table]:
        acc.append(counts)
        return [tf.merge_item_days(acc)] if len(acc) > 16 else acc

    def merge_accumulators(self, accs: Iterable[list[pa.Table]]) -> list[pa.Table]:
        return [tf.merge_item_days([t for acc in accs for t in acc])]

    def extract_output(self, acc: list[pa.Table]) -> pa.Table:
        return tf.merge_item_days(acc)


def _write_item_stats(counts: pa.Table, out: str) -> dict[str, int]:
    stats = tf.item_stats(counts)
    pq.write_table(stats, Path(out) / "item_stats" / "part-00000.parquet")
    return {"item_stats_rows": stats.num_rows}


class _TimeRangeCombine(beam.CombineFn):
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


class _SumStats(beam.CombineFn):
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


def _write_dead_letters(element: tuple[int, list[dict]], directory: str) -> None:
    index, rows = element
    with open(Path(directory) / f"part-{index:05d}.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_vocab_outputs(vocab: tf.Vocab, side: tf.SideTables, out: str) -> dict[str, int]:
    root = Path(out)
    for entity, table in tf.vocab_tables(vocab).items():
        pq.write_table(table, root / "vocab" / f"{entity}.parquet")
    users, items = tf.side_outputs(vocab, side)
    pq.write_table(users, root / "users" / "part-00000.parquet")
    pq.write_table(items, root / "items" / "part-00000.parquet")
    stats = {"users_table_rows": users.num_rows, "items_table_rows": items.num_rows}
    for entity in VOCAB_ENTITIES:
        stats[f"vocab.{entity}"] = vocab.size(entity)
        stats[f"vocab_new.{entity}"] = vocab.size(entity) - vocab.previous_size[entity]
    stats["items_seen"] = len(vocab.ids.item)
    return stats


def _write_json(value: Any, path: str) -> None:
    Path(path).write_text(json.dumps(value))


def _load_side(_: Any, users: str | None, items: str | None) -> tf.SideTables:
    return tf.load_side_tables(users, items)


def _load_previous(_: Any, vocab_dir: str | None) -> dict:
    return tf.load_vocab_dir(vocab_dir)


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
    work = out / _WORK
    tasks_dir, buckets_dir = work / "tasks", work / "buckets"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    buckets_dir.mkdir(parents=True, exist_ok=True)

    parsed = (
        p
        | "ReadTasks" >> beam.Create(tasks)
        | "ParseAndCheck"
        >> beam.ParDo(_ParseTask(now_ms, n_buckets, min_ts_ms, str(tasks_dir))).with_outputs(
            DEAD, STATS, main="files"
        )
    )
    _ = parsed[DEAD] | "WriteDeadLetters" >> beam.Map(_write_dead_letters, str(out / "dead_letter"))

    deduped = (
        parsed.files
        | "GroupByEventKey" >> beam.GroupByKey()
        | "DropDuplicates"
        >> beam.ParDo(_DedupBucket(n_shards, str(buckets_dir))).with_outputs(STATS, IDS, SPAN, main="files")
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
        | "UnionIds" >> beam.CombineGlobally(_IdsCombine())
        | "BuildVocab" >> beam.Map(tf.build_vocab, AsSingleton(previous), AsSingleton(side))
    )
    vocab_stats = vocab | "WriteVocabUsersItems" >> beam.Map(
        _write_vocab_outputs, AsSingleton(side), str(out)
    )

    span = deduped[SPAN] | "TimeRange" >> beam.CombineGlobally(_TimeRangeCombine())
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
            _BuildShard(str(out), cfg, split_mode), AsSingleton(vocab), AsSingleton(span)
        ).with_outputs(ITEM_DAYS, main="stats")
    )
    item_stats = (
        shards[ITEM_DAYS]
        | "SumItemDays" >> beam.CombineGlobally(_ItemDaysCombine())
        | "WriteItemStats" >> beam.Map(_write_item_stats, str(out))
    )

    _ = (
        (parsed[STATS], deduped[STATS], shards.stats, vocab_stats, item_stats)
        | "AllStats" >> beam.Flatten()
        | "SumStats" >> beam.CombineGlobally(_SumStats())
        | "WriteStats" >> beam.Map(_write_json, str(work / "stats.json"))
    )


def _runner(cfg: IngestConfig) -> tuple[Any, PipelineOptions]:
    """The runner `cfg.runner` names; the in-process FnApiRunner by default, never an implicit one."""
    args = list(cfg.runner_options)
    if cfg.runner == "FnApiRunner":
        # Named explicitly: the DirectRunner default would first try to download the Prism binary.
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner(), PipelineOptions(args)
    return cfg.runner, PipelineOptions([f"--runner={cfg.runner}", *args])


# ---- the step -----------------------------------------------------------------------------------


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _side_info(path: Path | None, counts: dict[str, int] | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "sha256": file_fingerprint(path),
        **(counts or {}),
    }


def _manifest(
    files: list, stats: dict[str, int], span: list[int] | None, cfg: IngestConfig, side: dict[str, Any]
) -> dict[str, Any]:
    rejected = {r: stats.get(f"rejected.{r}", 0) for r in REASONS if stats.get(f"rejected.{r}", 0)}
    read = stats.get("read", 0)
    accepted = stats.get("events", 0)
    duplicates = stats.get("duplicates", 0)
    if read != accepted + sum(rejected.values()) + duplicates:
        raise RuntimeError(
            f"ingest counts do not reconcile: read {read} != accepted {accepted} + rejected "
            f"{sum(rejected.values())} + duplicates {duplicates}"
        )
    examples = stats.get("examples", 0)
    boundaries = None
    time_range = None
    if span is not None:
        valid_start, test_start = tf.split_bounds(span[0], span[1], cfg.valid_fraction, cfg.test_fraction)
        time_range = {"min_ms": span[0], "max_ms": span[1], "min": _iso(span[0]), "max": _iso(span[1])}
        boundaries = {
            "valid_start_ms": valid_start,
            "test_start_ms": test_start,
            "valid_start": _iso(valid_start),
            "test_start": _iso(test_start),
        }
    return {
        "ok": True,
        "inputs": [asdict(f) for f in files],
        "side_tables": side,
        "read": read,
        "accepted": accepted,
        "rejected": rejected,
        "rejected_total": sum(rejected.values()),
        "rejected_share": sum(rejected.values()) / read if read else 0.0,
        "duplicates": duplicates,
        "examples": examples,
        "examples_by_split": {name: stats.get(f"examples_{name}", 0) for name in SPLITS},
        "positives": stats.get("positives", 0),
        "label_rate": stats.get("positives", 0) / examples if examples else 0.0,
        "users": stats.get("users", 0),
        "items": stats.get("items_seen", 0),
        "behaviors": stats.get("behaviors", 0),
        "sessions": stats.get("sessions", 0),
        "item_stats_rows": stats.get("item_stats_rows", 0),
        "vocab": {
            entity: {"size": stats.get(f"vocab.{entity}", 0), "new": stats.get(f"vocab_new.{entity}", 0)}
            for entity in VOCAB_ENTITIES
        },
        "time_range": time_range,
        "split_boundaries": boundaries,
        "config": cfg.model_dump(),
    }


def _rejection_message(manifest: dict[str, Any], cfg: IngestConfig, out: Path) -> str:
    counts = manifest["rejected"]
    rejected, read, share = manifest["rejected_total"], manifest["read"], manifest["rejected_share"]
    adapter = manifest.get("adapter")
    if adapter is not None and adapter["rows_rejected_share"] > share:
        # The data set's own rows were rejected by its adapter, before any event existed.
        counts = adapter["rows_rejected"]
        rejected, read, share = (
            adapter["rows_rejected_total"],
            adapter["rows_read"],
            adapter["rows_rejected_share"],
        )
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in top)
    return (
        f"ingest rejected {rejected:,} of {read:,} records "
        f"({share:.1%}), more than max_rejected_share {cfg.max_rejected_share:.1%}; "
        f"top reasons: {reasons}; dead letters in {out / 'dead_letter'}"
    )


def run(
    inputs: list[str],
    out: Path,
    cfg: IngestConfig,
    *,
    users: Path | None = None,
    items: Path | None = None,
    vocab_dir: Path | None = None,
    fmt: str = "auto",
) -> dict:
    """Ingest raw logs (or a public data set through its adapter) into `out`; return the manifest.

    Outputs: behaviors/, examples/, vocab/, users/, items/, item_stats/ (Parquet), dead_letter/
    (JSONL) and manifest.json. All are written to a temporary sibling and renamed into place at the
    end. When the rejected share passes `cfg.max_rejected_share`, `out` holds only dead_letter/ and
    the manifest, the shared vocab is left alone, and `IngestRejectedError` is raised.

    `fmt` is auto, jsonl, csv or parquet for raw logs, or movielens, taobao or amazon for the
    public data sets (see `components.ingest.adapters` for each protocol).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt not in ADAPTERS:
        return _run(inputs, out, cfg, users=users, items=items, vocab_dir=vocab_dir, fmt=fmt)
    if items is not None:
        raise ValueError(f"the {fmt} adapter builds the items table from the data set; do not pass items")
    started = time.perf_counter()
    prepared = ADAPTERS[fmt](list(map(str, inputs)), cfg.adapter_negatives, cfg.adapter_seed)
    log.info(
        "ingest: %s adapter prepared %d events in %.1fs",
        fmt,
        prepared.events.num_rows,
        time.perf_counter() - started,
    )
    with tempfile.TemporaryDirectory(prefix=f"seqrank-{fmt}-") as scratch:
        events_path = Path(scratch) / "events.parquet"
        items_path = Path(scratch) / "items.parquet"
        pq.write_table(prepared.events, events_path, row_group_size=1 << 20)
        pq.write_table(prepared.items, items_path)
        return _run(
            [str(events_path)],
            out,
            cfg,
            users=users,
            items=items_path,
            vocab_dir=vocab_dir,
            fmt="parquet",
            adapter=(fmt, prepared),
            started=started,
        )


def _adapter_manifest(name: str, prepared: adapters.Prepared) -> dict[str, Any]:
    report = dict(prepared.report)
    accounted = (
        report["rows_used"]
        + sum(report["rows_rejected"].values())
        + report["rows_duplicate"]
        + sum(report["rows_filtered"].values())
    )
    if accounted != report["rows_read"]:
        raise RuntimeError(
            f"{name} adapter counts do not reconcile: read {report['rows_read']} != {accounted}"
        )
    report["rows_rejected_total"] = sum(report["rows_rejected"].values())
    report["rows_rejected_share"] = (
        report["rows_rejected_total"] / report["rows_read"] if report["rows_read"] else 0.0
    )
    return {"name": name, "split_mode": prepared.split_mode, **report}


def _run(
    inputs: list[str],
    out: Path,
    cfg: IngestConfig,
    *,
    users: Path | None,
    items: Path | None,
    vocab_dir: Path | None,
    fmt: str,
    adapter: tuple[str, adapters.Prepared] | None = None,
    started: float | None = None,
) -> dict:
    started = started if started is not None else time.perf_counter()
    # Beam logs a line at INFO for every postponed (string) annotation it reads off our functions.
    logging.getLogger("apache_beam.typehints.native_type_compatibility").setLevel(logging.WARNING)
    out = Path(out)
    users = Path(users) if users is not None else None
    items = Path(items) if items is not None else None
    vocab_dir = Path(vocab_dir) if vocab_dir is not None else None
    files, tasks = plan([str(i) for i in inputs], fmt)
    total_bytes = sum(f.bytes for f in files)
    n_partitions = max(2, min(_MAX_PARTITIONS, math.ceil(total_bytes / _PARTITION_BYTES)))
    # Fixed once here so that every worker judges "in the future" against the same instant.
    now_ms = int(time.time() * 1000)
    log.info("ingest: %d file(s), %d read task(s), %d user shard(s)", len(files), len(tasks), n_partitions)

    with atomic_dir(out) as tmp:
        for name in (*DATA_DIRS, "dead_letter", _WORK):
            (tmp / name).mkdir()
        runner, options = _runner(cfg)
        with beam.Pipeline(runner=runner, options=options) as p:
            build_pipeline(
                p,
                tasks,
                tmp,
                cfg,
                users=users,
                items=items,
                vocab_dir=vocab_dir,
                now_ms=now_ms,
                n_shards=n_partitions,
                n_buckets=n_partitions,
                min_ts_ms=adapter[1].min_ts_ms if adapter else MIN_TS_MS,
                split_mode=adapter[1].split_mode if adapter else "time",
            )
        stats = json.loads((tmp / _WORK / "stats.json").read_text())
        span = json.loads((tmp / _WORK / "time_range.json").read_text())
        shutil.rmtree(tmp / _WORK)

        side = {
            "users": _side_info(users, {"rows": stats.get("users_table_rows", 0)}),
            "items": _side_info(items, {"rows": stats.get("items_table_rows", 0)}),
        }
        if adapter is not None:
            name, prepared = adapter
            # The manifest names the data set's files, not the scratch table made from them.
            files = [
                InputFile(path, name, Path(path).stat().st_size, file_fingerprint(Path(path)))
                for path in prepared.files
            ]
            side["items"] = {"source": f"{name} adapter", "rows": stats.get("items_table_rows", 0)}
            if prepared.dead:
                _write_dead_letters((len(tasks), prepared.dead), str(tmp / "dead_letter"))
        manifest = _manifest(files, stats, span, cfg, side)
        if adapter is not None:
            manifest["adapter"] = _adapter_manifest(*adapter)
        manifest["runner"] = cfg.runner
        manifest["shards"] = n_partitions
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        manifest["events_per_s"] = round(manifest["read"] / max(manifest["seconds"], 1e-9), 1)
        failed = manifest["rejected_share"] > cfg.max_rejected_share or (
            adapter is not None and manifest["adapter"]["rows_rejected_share"] > cfg.max_rejected_share
        )
        if failed:
            # Nothing a later step could mistake for good data; only the evidence stays.
            manifest["ok"] = False
            for name in DATA_DIRS:
                shutil.rmtree(tmp / name)
        elif vocab_dir is not None:
            # Before `out` is published: a crash in between leaves extra ids in the shared vocab
            # (harmless, append-only), never outputs whose indices the shared vocab lacks.
            with atomic_dir(vocab_dir) as vocab_tmp:
                for path in sorted((tmp / "vocab").iterdir()):
                    shutil.copy2(path, vocab_tmp / path.name)
        write_json(tmp / "manifest.json", manifest)

    if failed:
        raise IngestRejectedError(_rejection_message(manifest, cfg, out), manifest)
    log.info(
        "ingest: read %d, accepted %d, rejected %d, duplicates %d -> %d examples, %d users in %.1fs",
        manifest["read"],
        manifest["accepted"],
        manifest["rejected_total"],
        manifest["duplicates"],
        manifest["examples"],
        manifest["users"],
        manifest["seconds"],
    )
    return manifest
