"""Ingest's entry point: `run` picks the adapter and Beam runner, runs the graph, publishes outputs.

The graph itself is in `graph.py`, its steps in `beam_stages.py`, the manifest in `manifest.py`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from components.ingest import exchange
from components.ingest.adapters import ADAPTERS, Prepared
from components.ingest.beam_stages import write_dead_letters
from components.ingest.graph import WORK, build_pipeline
from components.ingest.manifest import adapter_manifest, build_manifest, iso_ms, rejection_message, side_info
from components.ingest.records import MIN_TS_MS
from components.ingest.shards import NO_LIMIT
from components.ingest.sources import InputFile, plan, resolve_inputs
from seqrank.config import IngestConfig
from seqrank.errors import InputError
from seqrank.storage import atomic_dir, file_fingerprint, write_json

log = logging.getLogger(__name__)

DATA_DIRS = ("behaviors", "examples", "vocab", "users", "items", "item_stats")
# One user shard and one dedup bucket per this many input bytes: shards are the unit of per-user
# parallelism and of output files, buckets that of duplicate removal, and neither may depend on
# how many workers run or how the input is cut into read tasks.
_PARTITION_BYTES = 32 << 20
_MAX_PARTITIONS = 256
FORMATS = ("auto", "jsonl", "csv", "parquet", *ADAPTERS)


class IngestRejectedError(RuntimeError):
    """More records were rejected than `max_rejected_share` allows; dead letters and manifest exist."""

    def __init__(self, message: str, manifest: dict[str, Any]) -> None:
        super().__init__(message)
        self.manifest = manifest


def _runner(cfg: IngestConfig) -> tuple[Any, PipelineOptions]:
    """The runner `cfg.runner` names; the in-process FnApiRunner by default, never an implicit one."""
    args = list(cfg.runner_options)
    if cfg.runner == "FnApiRunner":
        # Named explicitly: the DirectRunner default would first try to download the Prism binary.
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        options = PipelineOptions(args)
        # Worker processes (--direct_running_mode=multi_processing) see the options only through
        # this; without it they import no --beam_plugins (file systems) and miss the file systems'
        # settings.
        info = beam_provision_api_pb2.ProvisionInfo(
            retrieval_token="unused-retrieval-token",
            pipeline_options=JobServiceHandle.encode_pipeline_options(
                options.get_all_options(drop_default=True)
            ),
        )
        return FnApiRunner(provision_info=ExtendedProvisionInfo(info)), options
    return cfg.runner, PipelineOptions([f"--runner={cfg.runner}", *args])


@contextlib.contextmanager
def _workspace(temp_location: str, tmp: Path) -> Iterator[str]:
    """Where the workers write: the step's temp dir, or a fresh folder under `temp_location`.

    The folder under `temp_location` is removed on the way out, whatever happened.
    """
    if not temp_location:
        yield str(tmp)
        return
    root = exchange.join(temp_location, f"seqrank-ingest-{uuid.uuid4().hex[:12]}")
    try:
        yield root
    finally:
        exchange.remove_tree(root)


def _stage(path: Path | None, root: str, name: str, folder: bool = False) -> str | None:
    """A copy of this process's local file (or folder) `path` under `root/side`, for the workers."""
    if path is None or (folder and not path.is_dir()):
        return None
    staged = exchange.join(root, "side", name)
    if folder:
        exchange.copy_folder(str(path), staged)
    else:
        exchange.copy_file(str(path), staged)
    return staged


def run(
    inputs: list[str],
    out: Path,
    cfg: IngestConfig,
    *,
    users: Path | None = None,
    items: Path | None = None,
    vocab_dir: Path | None = None,
    fmt: str = "auto",
    start: str | None = None,
    end: str | None = None,
) -> dict:
    """Ingest raw logs (or a public data set through its adapter) into `out`; return the manifest.

    Outputs: behaviors/, examples/, vocab/, users/, items/, item_stats/ (Parquet), dead_letter/
    (JSONL) and manifest.json. All are written to a temporary sibling and renamed into place at the
    end. When the rejected share passes `cfg.max_rejected_share`, `out` holds only dead_letter/ and
    the manifest, the shared vocab is left alone, and `IngestRejectedError` is raised.

    `fmt` is auto, jsonl, csv or parquet for raw logs, or movielens, taobao or amazon for the
    public data sets (see `components.ingest.adapters` for each protocol).

    Raw-log inputs may be local paths or URIs of any Beam file system (gs://, s3://, hdfs://). With
    `cfg.temp_location` set, the workers write the exchange files and outputs under a fresh folder
    there (users, items and the previous vocab are staged into it), this process copies the outputs
    into `out`, and the folder is removed: workers then need to share no disk with this process.

    `start` and `end` (ISO dates or times, UTC; either may be omitted) make a backfill window:
    examples are the impressions in [start, end), their history is every behavior before them in
    the inputs, and behaviors are as of `end`, so consecutive windows give the examples and the
    behaviors of one run over all of them (`shards.build_shard`). Accepted events after `end` (past
    the attribution window) are counted in the manifest as `after_window`.
    """
    run_window = window_ms(start, end)
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    exchange.check_location(cfg.temp_location, "ingest.temp_location")
    # Inputs and the temp location are read and written here, before any pipeline exists; their
    # file systems take their settings (credentials, endpoints) from the pipeline options.
    FileSystems.set_options(_runner(cfg)[1])
    if fmt not in ADAPTERS:
        # A folder is read by its layout (`sources.resolve_inputs`): a `seqrank generate` output
        # brings its side tables, which side tables passed explicitly override.
        resolved = resolve_inputs(list(map(str, inputs)), fmt)
        users = users if users is not None else _local_side(resolved.users, "users")
        items = items if items is not None else _local_side(resolved.items, "items")
        return _run(
            resolved.events,
            out,
            cfg,
            users=users,
            items=items,
            vocab_dir=vocab_dir,
            fmt=fmt,
            run_window=run_window,
        )
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
    with (
        tempfile.TemporaryDirectory(prefix=f"seqrank-{fmt}-") as scratch,
        _workspace(cfg.temp_location, Path(scratch)) as events_dir,
    ):
        # The workers read the events, so they go where the workers can reach them; the items table
        # is a side table, which `_run` stages like any other.
        events_path = exchange.join(events_dir, "events.parquet")
        items_path = Path(scratch) / "items.parquet"
        exchange.mkdirs(events_dir)
        exchange.write_parquet(prepared.events, events_path, row_group_size=1 << 20)
        pq.write_table(prepared.items, items_path)
        return _run(
            [events_path],
            out,
            cfg,
            users=users,
            items=items_path,
            vocab_dir=vocab_dir,
            fmt="parquet",
            adapter=(fmt, prepared),
            started=started,
            run_window=run_window,
        )


def _local_side(path: str | None, name: str) -> Path | None:
    """A side table found in an input folder, which this process reads, so it must be local."""
    if path is None:
        return None
    if not exchange.is_local(path):
        raise InputError(
            f"the {name} table {path} of a generated folder is not on this machine: copy it here and "
            f"pass it as the {name} side table (--{name})"
        )
    return Path(path)


def window_ms(start: str | None, end: str | None) -> tuple[int, int]:
    """[start, end) in epoch ms from ISO dates or times (UTC when no offset is given); open ends stay open."""
    bounds = list(NO_LIMIT)
    for i, (name, value) in enumerate((("start", start), ("end", end))):
        if not value:
            continue
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name} = {value!r}: expected an ISO date or time, e.g. 2026-01-31") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        bounds[i] = int(moment.timestamp() * 1000)
    if bounds[0] >= bounds[1]:
        raise ValueError(f"start {start} must be before end {end}")
    return bounds[0], bounds[1]


def _run(
    inputs: list[str],
    out: Path,
    cfg: IngestConfig,
    *,
    users: Path | None,
    items: Path | None,
    vocab_dir: Path | None,
    fmt: str,
    adapter: tuple[str, Prepared] | None = None,
    started: float | None = None,
    run_window: tuple[int, int] = NO_LIMIT,
) -> dict:
    started = started if started is not None else time.perf_counter()
    # Beam logs a line at INFO for every postponed (string) annotation it reads off our functions.
    logging.getLogger("apache_beam.typehints.native_type_compatibility").setLevel(logging.WARNING)
    out = Path(out)
    users = Path(users) if users is not None else None
    items = Path(items) if items is not None else None
    vocab_dir = Path(vocab_dir) if vocab_dir is not None else None
    files, tasks = plan([str(i) for i in inputs], fmt)
    if not tasks:
        # An output without one event would fail every later step further from the cause.
        raise InputError(
            f"the inputs hold no records ({', '.join(f.path for f in files)} are empty): "
            "pass logs with events in them"
        )
    total_bytes = sum(f.bytes for f in files)
    n_partitions = max(2, min(_MAX_PARTITIONS, math.ceil(total_bytes / _PARTITION_BYTES)))
    # Fixed once here so that every worker judges "in the future" against the same instant.
    now_ms = int(time.time() * 1000)
    log.info("ingest: %d file(s), %d read task(s), %d user shard(s)", len(files), len(tasks), n_partitions)

    with atomic_dir(out) as tmp, _workspace(cfg.temp_location, tmp) as root:
        for name in (*DATA_DIRS, "dead_letter"):
            (tmp / name).mkdir()
        # Away from `tmp`, the workers write their outputs under `root` and this process brings
        # them back; the side tables and vocab they read are staged there first.
        remote = root != str(tmp)
        for name in (*DATA_DIRS, "dead_letter", WORK) if remote else (WORK,):
            exchange.mkdirs(exchange.join(root, name))
        runner, options = _runner(cfg)
        with beam.Pipeline(runner=runner, options=options) as p:
            build_pipeline(
                p,
                tasks,
                root,
                cfg,
                users=_stage(users, root, "users.parquet") if remote else users,
                items=_stage(items, root, "items.parquet") if remote else items,
                vocab_dir=_stage(vocab_dir, root, "vocab", folder=True) if remote else vocab_dir,
                now_ms=now_ms,
                n_shards=n_partitions,
                n_buckets=n_partitions,
                min_ts_ms=adapter[1].min_ts_ms if adapter else MIN_TS_MS,
                split_mode=adapter[1].split_mode if adapter else "time",
                run_window=run_window,
            )
        stats = exchange.read_json(exchange.join(root, WORK, "stats.json"))
        span = exchange.read_json(exchange.join(root, WORK, "time_range.json"))
        if not remote:
            shutil.rmtree(tmp / WORK)

        side = {
            "users": side_info(users, {"rows": stats.get("users_table_rows", 0)}),
            "items": side_info(items, {"rows": stats.get("items_table_rows", 0)}),
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
                write_dead_letters((len(tasks), prepared.dead), str(tmp / "dead_letter"))
        manifest = build_manifest(files, stats, span, cfg, side)
        if adapter is not None:
            manifest["adapter"] = adapter_manifest(*adapter)
        manifest["runner"] = cfg.runner
        manifest["shards"] = n_partitions
        if run_window != NO_LIMIT:
            manifest["window"] = {
                "start": None if run_window[0] == NO_LIMIT[0] else iso_ms(run_window[0]),
                "end": None if run_window[1] == NO_LIMIT[1] else iso_ms(run_window[1]),
            }
        manifest["after_window"] = int(stats.get("after_window", 0))
        failed = manifest["rejected_share"] > cfg.max_rejected_share or (
            adapter is not None and manifest["adapter"]["rows_rejected_share"] > cfg.max_rejected_share
        )
        if remote:
            for name in ("dead_letter",) if failed else (*DATA_DIRS, "dead_letter"):
                exchange.copy_folder(exchange.join(root, name), str(tmp / name))
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        manifest["events_per_s"] = round(manifest["read"] / max(manifest["seconds"], 1e-9), 1)
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
        raise IngestRejectedError(rejection_message(manifest, cfg, out), manifest)
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
