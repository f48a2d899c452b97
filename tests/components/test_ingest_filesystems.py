"""Ingest through Beam's FileSystems: object-store inputs, a remote temp location, many processes.

The store here is `FakeStore`, a real Beam `FileSystem` for the scheme fakestore:// kept in a local
folder. Like GCS or S3 it has no folders, an object appears only once its writer closes, and its
channels have no file descriptor, so any code that opened, globbed or memory-mapped a fakestore://
path itself instead of going through `FileSystems` would fail. Beam finds it by scheme once this
module is imported; the workers of the multi-process runner import it through `--beam_plugins`.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems

from benchmarks.bench_ingest import make_events
from components import ingest
from components.ingest import exchange, sources
from seqrank.config import IngestConfig

SCHEME = "fakestore"
PREFIX = f"{SCHEME}://"
ROOT_ENV = "SEQRANK_FAKESTORE_ROOT"
REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("behaviors", "examples", "vocab", "users", "items", "item_stats")
MULTI_PROCESS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
# Small read tasks, so that even small inputs spread over several tasks (and workers).
CHUNK = 256 << 10


class FakeStore(FileSystem):
    """fakestore://bucket/key is the file `$SEQRANK_FAKESTORE_ROOT/bucket/key`; see the module doc.

    Every object written or renamed is logged (with the writer's pid) to `$SEQRANK_FAKESTORE_ROOT.journal`.
    """

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    @staticmethod
    def root() -> str:
        return os.environ[ROOT_ENV]

    def _local(self, path: str) -> str:
        if not path.startswith(PREFIX):
            raise ValueError(f"not a {SCHEME} URI: {path}")
        return os.path.join(self.root(), path[len(PREFIX) :])

    def join(self, basepath: str, *paths: str) -> str:
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        pass  # no folders, as on GCS and S3

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix: str) -> Any:
        root = self.root()
        for folder, _, names in os.walk(root):
            for name in names:
                local = os.path.join(folder, name)
                uri = PREFIX + os.path.relpath(local, root)
                if uri.startswith(dir_or_prefix):
                    yield FileMetadata(uri, os.path.getsize(local), os.path.getmtime(local))

    def create(
        self, path: str, mime_type: str = "application/octet-stream", compression_type: str = "auto"
    ) -> Any:
        return _Upload(path, self._local(path))

    def open(
        self, path: str, mime_type: str = "application/octet-stream", compression_type: str = "auto"
    ) -> Any:
        assert compression_type == CompressionTypes.UNCOMPRESSED, compression_type
        try:
            with open(self._local(path), "rb") as f:
                return io.BytesIO(f.read())
        except FileNotFoundError as err:
            raise BeamIOError(f"no object {path}", {path: err}) from err

    def copy(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
        for src, dst in zip(source_file_names, destination_file_names, strict=True):
            os.makedirs(os.path.dirname(self._local(dst)), exist_ok=True)
            shutil.copyfile(self._local(src), self._local(dst))

    def rename(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
        failed = {}
        for src, dst in zip(source_file_names, destination_file_names, strict=True):
            try:
                os.makedirs(os.path.dirname(self._local(dst)), exist_ok=True)
                os.replace(self._local(src), self._local(dst))
                _log("rename", dst)
            except OSError as err:
                failed[(src, dst)] = err
        if failed:
            raise BeamIOError("rename failed", failed)

    def exists(self, path: str) -> bool:
        return os.path.isfile(self._local(path))

    def size(self, path: str) -> int:
        return self.metadata(path).size_in_bytes

    def last_updated(self, path: str) -> float:
        return self.metadata(path).last_updated_in_seconds

    def checksum(self, path: str) -> str:
        return str(self.size(path))

    def metadata(self, path: str) -> FileMetadata:
        if not self.exists(path):
            raise BeamIOError(f"no object {path}")
        local = self._local(path)
        return FileMetadata(path, os.path.getsize(local), os.path.getmtime(local))

    def delete(self, paths: list[str]) -> None:
        failed = {}
        for path in paths:
            if self.exists(path):
                os.remove(self._local(path))
            else:
                failed[path] = FileNotFoundError(path)
        if failed:
            raise BeamIOError("delete failed", failed)


class _Upload(io.BytesIO):
    """A write channel whose object appears, whole, when it is closed (as a GCS or S3 upload)."""

    def __init__(self, uri: str, local: str) -> None:
        super().__init__()
        self._uri, self._local = uri, local

    def close(self) -> None:
        if not self.closed:
            staging = f"{FakeStore.root()}.staging"
            os.makedirs(staging, exist_ok=True)
            part = os.path.join(staging, uuid.uuid4().hex)
            with open(part, "wb") as f:
                f.write(self.getvalue())
            os.makedirs(os.path.dirname(self._local), exist_ok=True)
            os.replace(part, self._local)
            _log("write", self._uri)
        super().close()


def _log(op: str, uri: str) -> None:
    with open(f"{FakeStore.root()}.journal", "a") as f:
        f.write(json.dumps({"op": op, "uri": uri, "pid": os.getpid()}) + "\n")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The store's folder, empty; fakestore://bucket/... lives in `store / "bucket"`."""
    root = tmp_path / "store"
    root.mkdir()
    monkeypatch.setenv(ROOT_ENV, str(root))
    return root


def journal(store: Path) -> list[dict]:
    path = Path(f"{store}.journal")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def objects(prefix: str) -> list[str]:
    return sorted(m.path for m in FileSystems.match([prefix + "**"])[0].metadata_list)


def write_logs(folder: Path, n: int, seed: int = 0) -> None:
    """Raw logs in every format: logs/{a,b}.jsonl (with broken lines), more/c.parquet, more/d.csv.

    Some events appear in two files (duplicates across inputs); more/readme.txt is not an input.
    """
    events = make_events(n, users=300, items=500, categories=20, slate=10, seed=seed)
    cut = np.linspace(0, len(events), 5).astype(int)
    parts = [events.iloc[a:b] for a, b in itertools.pairwise(cut)]
    (folder / "logs").mkdir(parents=True)
    (folder / "more").mkdir()
    for name, part in zip(("a", "b"), parts[:2], strict=True):
        path = folder / "logs" / f"{name}.jsonl"
        pd.concat([part, parts[3].head(20)]).to_json(path, orient="records", lines=True)
        with open(path, "a") as f:
            f.write('{"ts": "not a time", "user_id": "u1", "item_id": "i1", "event_type": "click"}\nbroken\n')
    parts[2].to_parquet(folder / "more" / "c.parquet", index=False, row_group_size=max(1, len(parts[2]) // 3))
    parts[3].to_csv(folder / "more" / "d.csv", index=False)
    (folder / "more" / "readme.txt").write_text("not a log\n")


def outputs(out: Path) -> dict[str, pa.Table]:
    return {name: pq.read_table(out / name) for name in OUTPUTS}


def dead_letters(out: Path) -> list[dict]:
    rows = []
    for path in sorted((out / "dead_letter").glob("*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines())
    return rows


def comparable(manifest: dict, local_root: Path | None = None) -> dict:
    """The manifest without timings and the settings that differ between runs; URIs as local paths."""
    kept = {k: v for k, v in manifest.items() if k not in ("seconds", "events_per_s", "config")}
    kept["config"] = {
        k: v for k, v in manifest["config"].items() if k not in ("runner_options", "temp_location")
    }
    if local_root is not None:
        kept["inputs"] = [
            {**f, "path": f["path"].replace(PREFIX, f"{local_root}/", 1)} for f in manifest["inputs"]
        ]
    return kept


def assert_same_run(out: Path, manifest: dict, ref_out: Path, ref_manifest: dict, store: Path | None) -> None:
    got, want = outputs(out), outputs(ref_out)
    for name in OUTPUTS:
        assert got[name].num_rows > 0, name
        assert got[name].equals(want[name]), name
    assert sorted(p.name for p in (out / "examples").iterdir()) == sorted(
        p.name for p in (ref_out / "examples").iterdir()
    )
    letters = dead_letters(out)
    if store is not None:
        assert all(row["source"].startswith(PREFIX) for row in letters)
        letters = [{**row, "source": row["source"].replace(PREFIX, f"{store}/", 1)} for row in letters]
    assert letters == dead_letters(ref_out)
    assert len(letters) == 4
    assert comparable(manifest, store) == comparable(ref_manifest)
    assert manifest["duplicates"] == 40


def test_object_store_inputs_and_temp_location_give_the_local_rows(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CHUNK_BYTES", CHUNK)
    write_logs(store / "bucket", 8_000)
    items = tmp_path / "items.parquet"
    listed = [f"i{k}" for k in range(0, 500, 7)]
    pq.write_table(pa.table({"item_id": listed, "category_id": ["cX"] * len(listed)}), items)
    # A previous run's vocab, one copy per run below, so both extend the same one.
    seed = tmp_path / "seed"
    seed.mkdir()
    make_events(500, 50, 80, 5, 10, seed=1).to_json(seed / "e.jsonl", orient="records", lines=True)
    ingest.run(
        [str(seed / "e.jsonl")], tmp_path / "seed-out", IngestConfig(), vocab_dir=tmp_path / "vocab-local"
    )
    shutil.copytree(tmp_path / "vocab-local", tmp_path / "vocab-store")

    loose = IngestConfig(max_rejected_share=1.0)
    local_inputs = [f"{store}/bucket/logs/*.jsonl", f"{store}/bucket/more"]
    ref = ingest.run(local_inputs, tmp_path / "ref", loose, items=items, vocab_dir=tmp_path / "vocab-local")

    cfg = IngestConfig(max_rejected_share=1.0, temp_location="fakestore://bucket/tmp")
    uris = ["fakestore://bucket/logs/*.jsonl", "fakestore://bucket/more/"]
    got = ingest.run(uris, tmp_path / "out", cfg, items=items, vocab_dir=tmp_path / "vocab-store")

    assert [f["path"] for f in got["inputs"]] == [
        f"fakestore://bucket/{name}"
        for name in ("logs/a.jsonl", "logs/b.jsonl", "more/c.parquet", "more/d.csv")
    ]
    assert_same_run(tmp_path / "out", got, tmp_path / "ref", ref, store)
    for entity in ("user", "item", "category"):
        assert pq.read_table(tmp_path / "vocab-store" / f"{entity}.parquet").equals(
            pq.read_table(tmp_path / "vocab-local" / f"{entity}.parquet")
        )
    # Everything the workers handed on went through the store, under the temp location ...
    written = [entry["uri"].removeprefix("fakestore://bucket/tmp/") for entry in journal(store)]
    run_dirs = {uri.split("/")[0] for uri in written}
    assert len(run_dirs) == 1 and run_dirs.pop().startswith("seqrank-ingest-")
    kinds = {"/".join(part for part in uri.split("/")[1:-1]) for uri in written}
    assert {"_work", "_work/tasks", "_work/buckets", "side", "side/vocab", "dead_letter", *OUTPUTS} <= kinds
    renamed = [entry["uri"] for entry in journal(store) if entry["op"] == "rename"]
    for suffix in ("/_work/stats.json", "/_work/time_range.json", "/examples/part-00000.parquet"):
        assert any(uri.endswith(suffix) for uri in renamed), suffix
    # ... and the temp location is left empty.
    assert objects("fakestore://bucket/tmp/") == []


@pytest.mark.parametrize("where", ["local", "store"])
def test_multi_process_runner_gives_the_in_process_rows(
    where: str, store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apache_beam.runners.portability import prism_runner

    def no_prism(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the Prism runner was started (it downloads its binary; DESIGN §9)")

    monkeypatch.setattr(prism_runner.PrismJobServer, "__init__", no_prism)
    monkeypatch.setattr(sources, "CHUNK_BYTES", CHUNK)
    write_logs(store / "bucket", 30_000, seed=3)
    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ["i1", "i2", "i3"], "category_id": ["c1", "c2", "c1"]}), items)
    local_inputs = [f"{store}/bucket/logs/*.jsonl", f"{store}/bucket/more"]
    loose = IngestConfig(max_rejected_share=1.0)
    ref = ingest.run(local_inputs, tmp_path / "ref", loose, items=items)
    assert ref["runner"] == "FnApiRunner"

    if where == "local":
        # Workers on one machine, writing straight into the step's temp dir (a shared disk).
        cfg = IngestConfig(max_rejected_share=1.0, runner_options=MULTI_PROCESS)
        got = ingest.run(local_inputs, tmp_path / "out", cfg, items=items)
    else:
        # Workers that reach the inputs, the exchange and the outputs only through the store.
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        cfg = IngestConfig(
            max_rejected_share=1.0,
            temp_location="fakestore://bucket/tmp",
            runner_options=[*MULTI_PROCESS, f"--beam_plugins={__name__}"],
        )
        uris = ["fakestore://bucket/logs/*.jsonl", "fakestore://bucket/more/"]
        got = ingest.run(uris, tmp_path / "out", cfg, items=items)
        writers = {entry["pid"] for entry in journal(store)}
        assert writers - {os.getpid()}, "no worker process wrote to the store"
        assert objects("fakestore://bucket/tmp/") == []

    assert ref["read"] == got["read"] > 30_000
    assert_same_run(tmp_path / "out", got, tmp_path / "ref", ref, store if where == "store" else None)


def test_adapter_events_go_to_the_temp_location(store: Path, tmp_path: Path) -> None:
    taobao = REPO / "tests" / "fixtures" / "taobao"
    loose = IngestConfig(max_rejected_share=1.0)
    ref = ingest.run([str(taobao)], tmp_path / "ref", loose, fmt="taobao")
    cfg = IngestConfig(max_rejected_share=1.0, temp_location="fakestore://bucket/tmp")
    got = ingest.run([str(taobao)], tmp_path / "out", cfg, fmt="taobao")
    for name in OUTPUTS:
        assert outputs(tmp_path / "out")[name].equals(outputs(tmp_path / "ref")[name]), name
    assert comparable(got) == comparable(ref)
    assert any(entry["uri"].endswith("/events.parquet") for entry in journal(store))
    assert objects("fakestore://bucket/tmp/") == []


def test_failed_runs_under_a_temp_location_leave_only_evidence_and_no_scratch(
    store: Path, tmp_path: Path
) -> None:
    logs = store / "bucket" / "logs"
    logs.mkdir(parents=True)
    (logs / "a.jsonl").write_text(
        '{"ts": 1767225600000, "user_id": "u1", "item_id": "i1", "event_type": "impression"}\nbroken\n'
    )
    cfg = IngestConfig(max_rejected_share=0.1, temp_location="fakestore://bucket/tmp")
    with pytest.raises(ingest.IngestRejectedError):
        ingest.run(["fakestore://bucket/logs/a.jsonl"], tmp_path / "out", cfg)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dead_letter", "manifest.json"]
    assert [row["reason"] for row in dead_letters(tmp_path / "out")] == ["malformed"]
    assert objects("fakestore://bucket/tmp/") == []

    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ["i1"]}), items)  # lacks the required category_id
    with pytest.raises(Exception, match="category_id"):
        ingest.run(["fakestore://bucket/logs/a.jsonl"], tmp_path / "out2", cfg, items=items)
    assert not (tmp_path / "out2").exists()
    assert objects("fakestore://bucket/tmp/") == []


# ---- the pieces: exchange files, input expansion, read tasks ------------------------------------


def test_exchange_files_round_trip_through_the_store_without_memory_maps(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = pa.table({"k": [3, 0, 3, 1, 0, 3], "v": ["a", "b", "c", None, "e", "f"]})
    keys = table.column("k").to_numpy()
    remote = ["fakestore://bucket/x/one.arrow", "fakestore://bucket/x/two.arrow"]
    local = [str(tmp_path / "one.arrow"), str(tmp_path / "two.arrow")]
    for paths in (remote, local):
        assert exchange.write_partitions(table, keys, 5, paths[0]) == [0, 1, 3]
        assert exchange.write_partitions(table.slice(0, 1), keys[:1], 5, paths[1]) == [3]
    assert objects("fakestore://bucket/") == sorted(remote)  # no hidden part left behind

    mapped = []
    memory_map = pa.memory_map
    monkeypatch.setattr(exchange.pa, "memory_map", lambda path: mapped.append(path) or memory_map(path))
    for key in range(5):
        want = exchange.read_partition(local, key, table.schema)
        assert exchange.read_partition(remote, key, table.schema).equals(want)
    # Local files keep the zero-copy path; the store's are never handed to a memory map.
    assert mapped and all(not path.startswith(PREFIX) for path in mapped)


def test_a_failed_write_leaves_nothing_under_any_name(store: Path) -> None:
    uri = "fakestore://bucket/x/stats.json"
    with pytest.raises(RuntimeError), exchange.create(uri) as f:
        f.write(b'{"half": ')
        raise RuntimeError("worker died")
    assert objects("fakestore://bucket/") == []
    exchange.write_json({"read": 1}, uri)
    assert exchange.read_json(uri) == {"read": 1}


def test_a_retried_write_keeps_the_first_copy_where_rename_refuses_to_overwrite(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rename = FakeStore.rename

    def hdfs_rename(self: FakeStore, sources: list[str], destinations: list[str]) -> None:
        if any(self.exists(d) for d in destinations):
            raise BeamIOError("destination exists", {})
        rename(self, sources, destinations)

    monkeypatch.setattr(FakeStore, "rename", hdfs_rename)
    uri = "fakestore://bucket/x/task-00001.arrow"
    exchange.write_bytes(uri, b"first")
    exchange.write_bytes(uri, b"first")  # a retried bundle writes the same file again
    assert exchange.read_bytes(uri) == b"first"
    assert objects("fakestore://bucket/") == [uri]


def test_inputs_on_the_store_expand_like_local_paths(store: Path) -> None:
    write_logs(store / "bucket", 2_000)
    local = sources.expand_inputs([f"{store}/bucket/logs/*.jsonl", f"{store}/bucket/more"])
    for folder in ("fakestore://bucket/more", "fakestore://bucket/more/"):
        uris = sources.expand_inputs(["fakestore://bucket/logs/*.jsonl", folder])
        assert [u.replace(PREFIX, f"{store}/", 1) for u in uris] == local
    assert sources.expand_inputs(["fakestore://bucket/more/d.csv"]) == ["fakestore://bucket/more/d.csv"]
    for missing in (
        "fakestore://bucket/logs/*.csv",
        "fakestore://bucket/nope.jsonl",
        "fakestore://bucket/nope/",
    ):
        with pytest.raises(FileNotFoundError, match="matches no file"):
            sources.expand_inputs([missing])


def test_read_tasks_on_the_store_read_the_same_records(store: Path) -> None:
    write_logs(store / "bucket", 3_000)
    local_files, local_tasks = sources.plan(
        [f"{store}/bucket/logs", f"{store}/bucket/more"], chunk_bytes=20_000
    )
    files, tasks = sources.plan(["fakestore://bucket/logs", "fakestore://bucket/more"], chunk_bytes=20_000)
    assert len(tasks) == len(local_tasks) > 10
    assert [(f.fmt, f.bytes, f.sha256) for f in files] == [(f.fmt, f.bytes, f.sha256) for f in local_files]
    for task, local_task in zip(tasks, local_tasks, strict=True):
        assert task.path.replace(PREFIX, f"{store}/", 1) == local_task.path
        batches, local_batches = sources.read_task(task), sources.read_task(local_task)
        assert [b.n for b in batches] == [b.n for b in local_batches]
        for b, lb in zip(batches, local_batches, strict=True):
            np.testing.assert_array_equal(b.lines, lb.lines)
            np.testing.assert_array_equal(b.pre, lb.pre)
            assert [b.record(i) for i in range(b.n)] == [lb.record(i) for i in range(lb.n)]


def test_temp_location_without_a_file_system_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("ingest.temp_location = 'nosuchfs://bucket/tmp'")):
        ingest.run(
            [str(tmp_path / "x.jsonl")], tmp_path / "out", IngestConfig(temp_location="nosuchfs://bucket/tmp")
        )
