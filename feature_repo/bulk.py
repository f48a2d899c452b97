"""Bulk writes into the Feast online stores (SQLite, Redis) in Feast's own layout, and what each holds.

Feast's `online_write_batch` serializes every entity key and value in Python and, on SQLite, runs
one upsert statement per (row, feature): 443 s of a 533 s materialization of 100,000 users went
there. Here keys are serialized for a whole batch with numpy, values arrive as bytes, and a batch
is one transaction of multi-row INSERTs (SQLite) or one pipeline of HSETs (Redis). Tables, keys,
field hashes and value encodings are exactly Feast's (tests compare them byte for byte with
Feast's own ingestion), so Feast's API and CLI read what is written here.

An incremental run writes only the rows whose content changed (`Bulk.changed`), so it works on
whichever store it is given (a staged copy included). The SQLite store is its own record: a row's
stored values and event time are compared with the new row's, byte for byte, so nothing is kept
beside Feast's tables. Redis keeps, per view, entity key -> an 8-byte digest of the row written
(a hash beside Feast's): reading its rows back would cost a round trip per key. Either catches
late events that change a row without advancing its time, unlike a newest-timestamp watermark.
Pushes mark their rows `PUSHED` in Redis's holdings (on SQLite their content differs from the
offline row already), so the next run rewrites them from offline data.

Notation: R rows in a batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import operator
import os
import sqlite3
import struct
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from feast import FeatureStore

# The digest a push records: matches no content digest, so the next run rewrites the row.
PUSHED = b"\0" * 8
# Parameters per SQLite statement (SQLITE_MAX_VARIABLE_NUMBER is 32,766 since 3.32).
_SQL_VARS = 30_000
_HELD_SCAN = 50_000  # held keys per page when listing a view's holdings
_ROWS_PER_INSERT = 1_000  # rows per multi-row INSERT (5,000 parameters for a feature row)
# Serialized bytes a bulk load writes before it commits (SqliteBulk._transaction), so the WAL does
# not grow to the size of the whole load. A new file's first load is one transaction: it has no
# WAL, and after a commit its in-memory rollback journal would copy every key-index page it changes.
_LOAD_COMMIT_BYTES = 1 << 30
# Beside a SQLite store file being filled for the first time (see `first_load_marker`).
_FIRST_LOAD_SUFFIX = ".first-load"

_STRING, _INT64 = 2, 4  # feast ValueType numbers used by the v3 entity-key encoding

# A serialized value. Sequence values are bytearrays: Python's sqlite3 binds one as a blob directly,
# where a bytes parameter first goes through its adapter lookup (~0.4 µs a parameter).
Blob = bytes | bytearray


def entity_keys(join_keys: Sequence[str], columns: Sequence[np.ndarray]) -> list[bytes]:
    """Feast's `serialize_entity_key` (v3) for R rows of int64 join keys, vectorized.

    Layout: key count, then per join key (sorted by name) its type and UTF-8 name, then per
    value its type, byte length 8 and the little-endian int64 — all as `<I` / `<q` fields.
    """
    order = sorted(range(len(join_keys)), key=lambda i: join_keys[i])
    header = struct.pack("<I", len(join_keys)) + b"".join(
        struct.pack("<II", _STRING, len(name.encode())) + name.encode()
        for name in (join_keys[i] for i in order)
    )
    fields: list[tuple[str, Any, Any]] = [("header", np.uint8, (len(header),))]
    for i in range(len(order)):
        fields += [(f"type{i}", "<u4", ()), (f"size{i}", "<u4", ()), (f"value{i}", "<i8", ())]
    dtype = np.dtype([(name, kind, shape) for name, kind, shape in fields])
    rows = len(columns[0]) if columns else 0
    packed = np.empty(rows, dtype=dtype)
    packed["header"] = np.frombuffer(header, dtype=np.uint8)
    for position, i in enumerate(order):
        packed[f"type{position}"] = _INT64
        packed[f"size{position}"] = 8
        packed[f"value{position}"] = np.asarray(columns[i], dtype=np.int64)
    buffer, size = packed.tobytes(), dtype.itemsize
    return [buffer[r * size : (r + 1) * size] for r in range(rows)]


def digests(values: Mapping[str, Sequence[Blob]], stamps_us: np.ndarray) -> list[bytes]:
    """8-byte content digest per row: its event time and every feature's serialized value.

    The hashed bytes are, per row, `<q` event time then per feature (sorted by name) `<I` length
    and value. The fixed-width parts between values are laid out for all rows at once with numpy
    (the stamp and first length, then each further length), so Python only joins and hashes:
    a `struct.pack` per value was two thirds of the digest time.
    """
    names = sorted(values)
    rows = len(stamps_us)
    if not names:
        return [hashlib.blake2b(struct.pack("<q", s), digest_size=8).digest() for s in stamps_us.tolist()]
    lengths = [np.fromiter(map(len, values[name]), dtype="<u4", count=rows) for name in names]
    head = np.empty(rows, dtype=[("stamp", "<q"), ("size", "<u4")])
    head["stamp"], head["size"] = stamps_us, lengths[0]
    parts: list[Sequence[Blob]] = [head.view("V12").tolist(), values[names[0]]]
    for name, size in zip(names[1:], lengths[1:], strict=True):
        parts += [size.view("V4").tolist(), values[name]]
    blake2b, join = hashlib.blake2b, b"".join
    return [blake2b(join(row), digest_size=8).digest() for row in zip(*parts, strict=True)]


@dataclass
class Rows:
    """R rows of one feature view, serialized: what a bulk write takes.

    `values[feature][r]` is the serialized `Value` proto, `texts[feature][r]` what Feast's SQLite
    store keeps in `value_text` (the scalar as text, None for lists), `stamps_us` (R,) int64 event
    times in epoch µs, `digests[r]` the row's content digest, computed when first asked for
    (only Redis's holdings use them).
    """

    keys: list[bytes]
    values: dict[str, list[Blob]]
    texts: dict[str, list[str | None]]
    stamps_us: np.ndarray
    _digests: list[bytes] | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def digests(self) -> list[bytes]:
        if self._digests is None:
            self._digests = digests(self.values, self.stamps_us)
        return self._digests

    def take(self, index: Sequence[int]) -> Rows:
        """The rows at positions `index`, in that order."""
        return Rows(
            [self.keys[i] for i in index],
            {name: [v[i] for i in index] for name, v in self.values.items()},
            {name: [t[i] for i in index] for name, t in self.texts.items()},
            self.stamps_us[np.asarray(index, dtype=np.int64)],
            None if self._digests is None else [self._digests[i] for i in index],
        )


class Bulk(Protocol):
    """Bulk access to one Feast online store: rows of a view in, and what the store holds of it."""

    def write(self, view: str, rows: Rows, hold: bool = True) -> None:
        """Upsert `rows` of `view` (last write wins); `hold`: record them as the run's own (Redis
        records their digests; a SQLite row is its own record)."""

    def delete(self, view: str, keys: Sequence[bytes]) -> None:
        """Remove the rows of `view` at `keys` and whatever the store records of them, together."""

    def changed(self, view: str, rows: Rows) -> list[int]:
        """Positions of the `rows` the store does not hold as they are (absent or different)."""

    def hold(self, view: str, keys: Sequence[bytes], digest: bytes) -> None:
        """Record `digest` for `keys` where the store keeps digests (a push marks its rows PUSHED,
        so the next run rewrites them)."""

    def held_count(self, view: str) -> int:
        """How many rows (entity keys) of `view` the store holds."""

    def held_keys(self, view: str) -> Iterator[list[bytes]]:
        """Every entity key of `view` the store holds, in pages."""

    def begin_run(self) -> None:
        """A materialization run starts: tables empty at their first write may be bulk-loaded
        (indexes built at the end) until `flush`."""

    def end_load(self, view: str) -> None:
        """Every row of `view` for this run is written: build what its bulk load deferred now,
        not at `flush` (later writes to it are upserts)."""

    def flush(self) -> None:
        """End of a run: finish bulk loads and fold everything written into the store's main file."""

    def abort(self) -> None:
        """A run failed before `flush`: undo its unfinished bulk loads (rows and holdings)."""


def _sqlite_seconds(stamps_us: np.ndarray) -> list[int]:
    """Event times as Feast's SQLite adapter stores them: `int(naive_utc.timestamp())`.

    That reads the naive UTC datetime in the local zone; in UTC (containers, CI) it is the epoch
    second, computed here for all rows at once, elsewhere row by row exactly as Feast does.
    """
    if time.timezone == 0 and not time.daylight:
        return (stamps_us // 1_000_000).tolist()
    base = datetime(1970, 1, 1)
    return [int((base + timedelta(microseconds=us)).timestamp()) for us in stamps_us.tolist()]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pick(items: Sequence[Any], order: Sequence[int]) -> Sequence[Any]:
    """`items` at positions `order` (itemgetter gathers in C; one position gives a bare item)."""
    if len(order) == 1:
        return [items[order[0]]]
    return operator.itemgetter(*order)(items) if order else []


def first_load_marker(db_path: Path) -> Path:
    """The file that marks the SQLite store at `db_path` as new and not yet filled by a whole run.

    A store file created for a run is filled through a rollback journal kept in memory and
    switched to write-ahead logging when the run ends (`SqliteBulk.flush`), which removes this
    marker. A marker that is still there means a run died while filling a new file: its content is
    undefined, and the next run starts the file again (components.features.online.create_sqlite).
    """
    return db_path.with_name(db_path.name + _FIRST_LOAD_SUFFIX)


def mark_first_load(db_path: Path) -> None:
    """Create the first-load marker of `db_path`, on disk with its directory entry before the
    file's first page is written."""
    marker = first_load_marker(db_path)
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o644))
    _fsync(marker)
    _fsync(marker.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _insert_rows(conn: sqlite3.Connection, sql: str, row: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """Run `sql` (an INSERT whose `{values}` is its VALUES list) over `rows`, each bound to the
    placeholders `row`, in statements of _ROWS_PER_INSERT rows.

    One statement per row (`executemany`) steps SQLite and releases and takes back the GIL once per
    row; a multi-row VALUES list does it once per statement: 25-30% less time per bulk-inserted row,
    and a writer thread that no longer contends for the GIL at every row. Rows bind in order, so
    a key given twice ends as its last row, as with one statement each.
    """
    full = sql.format(values=",".join([row] * _ROWS_PER_INSERT))
    it = iter(rows)
    while part := list(itertools.islice(it, _ROWS_PER_INSERT)):
        statement = full if len(part) == _ROWS_PER_INSERT else sql.format(values=",".join([row] * len(part)))
        conn.execute(statement, list(itertools.chain.from_iterable(part)))


def _page_size(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA page_size").fetchone()[0])


class SqliteBulk:
    """Feast's SQLite online store: tables `<project>_<view>` with one row per (key, feature)."""

    def __init__(self, store: FeatureStore) -> None:
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        online = store.config.online_store
        if getattr(online, "vector_enabled", False) or getattr(
            online, "enable_openai_compatible_store", False
        ):
            raise ValueError("bulk writes do not fill vector or value_num columns; turn those options off")
        self.project = store.project
        path = Path(SqliteOnlineStore._get_db_path(store.config))
        if not path.is_absolute():
            path = Path(store.repo_path) / path
        # Timestamps are written as Python's adapter writes naive datetimes (what Feast stores and
        # parses back through PARSE_DECLTYPES); our own connection so the service's reader is free.
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._path = path
        self._marker = first_load_marker(path)
        self._first_load = self._marker.exists()
        if self._first_load:
            # A new file no reader uses yet: pages go straight into it, with the rollback journal
            # in memory (enough to roll back a failed run's transaction) and no fsync. Through the
            # WAL every page was written twice, to the log and at checkpoint into the file: ~40%
            # of a first load's SQLite time. A crash leaves the marker, and the file is started anew.
            self.conn.execute("PRAGMA journal_mode=MEMORY")
            self.conn.execute("PRAGMA synchronous=OFF")
        else:
            # WAL (set by the features step) + NORMAL: a commit appends to the log without an
            # fsync; a power cut can lose the last commits, never corrupt the file, and a re-run
            # rewrites them (a lost commit takes its holdings with it).
            self.conn.execute("PRAGMA synchronous=NORMAL")
        # 64 MiB of page cache keeps the key indexes of millions of (user, category) rows in memory
        # while they are upserted.
        self.conn.execute("PRAGMA cache_size=-65536")
        # Checkpoints (copying the log into the file, with an fsync) every 64 MiB instead of 4 MiB
        # of log; `flush` folds the rest in at the end of a run.
        self.conn.execute(f"PRAGMA wal_autocheckpoint={64 * 2**20 // _page_size(self.conn)}")
        self._lock = threading.Lock()
        self._drop_holdings_tables()
        self._load: dict[str, bool] = {}
        self._run = False
        self._load_tx = False  # a bulk load's transaction is open (see _load_write)
        self._load_bytes = 0  # serialized bytes written in it

    def begin_run(self) -> None:
        with self._lock:
            if self._load_tx:  # a run that failed before its flush: its load never happened
                self.conn.execute("ROLLBACK")
                self._load_tx = False
        self._run = True

    def _loading(self, view: str) -> bool:
        """Whether `view`'s table was empty when this writer first wrote to it (a new store).

        Loading an empty table, its entity_key index (Feast's, beside the primary key that already
        serves key lookups) is dropped and built once by `flush` from the sorted keys, instead of
        being updated at a random page per row: 25-35% of a bulk load's SQLite time.
        """
        if not self._run:
            return False
        if view not in self._load:
            with self._lock:
                empty = self.conn.execute(f"SELECT 1 FROM {self._table(view)} LIMIT 1").fetchone() is None
                if empty:
                    self.conn.execute(f'DROP INDEX IF EXISTS "{self.project}_{view}_ek"')
            self._load[view] = empty
        return self._load[view]

    def _restore_indexes(self) -> None:
        for view, loaded in self._load.items():
            if loaded:
                self._restore_index(view)

    def _restore_index(self, view: str) -> None:
        # Feast's own index, as its `apply` creates it (it would re-create it too).
        self.conn.execute(
            f'CREATE INDEX IF NOT EXISTS "{self.project}_{view}_ek" ON {self._table(view)} (entity_key)'
        )

    def end_load(self, view: str) -> None:
        if self._load.get(view):
            # Inside the load's transaction: a run that fails later rolls the index back too.
            with self._transaction(load=True):
                self._restore_index(view)
            self._load[view] = False

    def abort(self) -> None:
        with self._lock:
            if self._load_tx:
                self.conn.execute("ROLLBACK")
                self._load_tx = False
            self._restore_indexes()  # the tables are back to empty (or to the last 1 GiB commit)
            self._load.clear()
            self._run = False

    def flush(self) -> None:
        with self._lock:
            self._restore_indexes()
            if self._load_tx:
                self.conn.execute("COMMIT")
                self._load_tx = False
            self._load.clear()
            self._run = False
            if self._first_load:
                self._end_first_load()
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _end_first_load(self) -> None:
        """The new file is whole: it journals with WAL from now on, like every store in use, and
        is on disk before its marker goes (a power cut after that leaves a whole file)."""
        mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"{self._path}: SQLite refused WAL journaling (journal_mode={mode})")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        _fsync(self._path)
        self._marker.unlink()
        self._first_load = False

    def _table(self, view: str) -> str:
        return f'"{self.project}_{view}"'

    def _drop_holdings_tables(self) -> None:
        """Remove the digest tables (`<project>_<view>__held`) that earlier versions kept beside
        Feast's tables: a SQLite row is now its own record, and nothing reads them."""
        tables = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        names = [
            name for (name,) in tables if name.startswith(f"{self.project}_") and name.endswith("__held")
        ]
        for name in names:
            self.conn.execute(f'DROP TABLE IF EXISTS "{name}"')

    @contextlib.contextmanager
    def _transaction(self, load: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction around a write; inside an open bulk load (or when `load` opens one)
        the write joins the load's transaction, which `flush` commits."""
        with self._lock:
            if load and not self._load_tx:
                self.conn.execute("BEGIN IMMEDIATE")
                self._load_tx, self._load_bytes = True, 0
            joined = self._load_tx
            if not joined:
                self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                # A failed write inside a load rolls the whole load back: rows and holdings
                # stay together, and the next run loads the table again from empty.
                self.conn.execute("ROLLBACK")
                self._load_tx = False
                raise
            if not joined:
                self.conn.execute("COMMIT")
            elif self._load_bytes >= _LOAD_COMMIT_BYTES and not self._first_load:
                self.conn.execute("COMMIT")
                self._load_tx = False

    def write(self, view: str, rows: Rows, hold: bool = True) -> None:
        if not len(rows):
            return
        loading = self._loading(view)
        into = f"{self._table(view)} (entity_key, feature_name, value, value_text, event_ts, created_ts)"
        if loading:
            insert = f"INSERT OR REPLACE INTO {into} VALUES {{values}}"
        else:
            insert = (
                f"INSERT INTO {into} VALUES {{values}} ON CONFLICT(entity_key, feature_name) DO UPDATE "
                "SET value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
                "created_ts = excluded.created_ts"
            )
        # In primary-key order, (entity_key, feature_name), so consecutive inserts land on
        # neighbouring pages of the key index. The statement tuples are built by zip and chain
        # in C: a Python generator per (row, feature) was ~15% of a (user, category) write.
        order = sorted(range(len(rows)), key=rows.keys.__getitem__)
        keys = list(map(bytearray, _pick(rows.keys, order)))  # bound once per feature (see Blob)
        seconds = _pick(_sqlite_seconds(rows.stamps_us), order)
        # Sequence views have no value_text (all None): NULL is written into the statement, as
        # sqlite3 sends a None parameter through its adapter lookup too.
        no_texts = all(texts.count(None) == len(texts) for texts in rows.texts.values())
        per_feature = [
            zip(
                keys,
                itertools.repeat(name),
                _pick(rows.values[name], order),
                *(() if no_texts else (_pick(rows.texts[name], order),)),
                seconds,
            )
            for name in sorted(rows.values)
        ]
        with self._transaction(load=loading) as conn:
            _insert_rows(
                conn,
                insert,
                "(?, ?, ?, NULL, ?, NULL)" if no_texts else "(?, ?, ?, ?, ?, NULL)",
                itertools.chain.from_iterable(zip(*per_feature, strict=True)),
            )
            if loading:
                self._load_bytes += sum(sum(map(len, values)) for values in rows.values.values())

    def delete(self, view: str, keys: Sequence[bytes]) -> None:
        if not keys:
            return
        with self._transaction() as conn:
            for part in _chunks(keys, _SQL_VARS):
                marks = ",".join("?" * len(part))
                conn.execute(f"DELETE FROM {self._table(view)} WHERE entity_key IN ({marks})", part)

    def changed(self, view: str, rows: Rows) -> list[int]:
        """Rows whose stored values or event time differ from theirs, or that are not stored:
        the store's rows are compared as Feast reads them (value bytes and event seconds), so no
        record of what was written is kept beside Feast's tables. Features the rows do not have
        are not compared."""
        stored: dict[bytes, tuple[int, dict[str, bytes]]] = {}
        with self._lock:
            for part in _chunks(rows.keys, _SQL_VARS):
                found = self.conn.execute(
                    f"SELECT entity_key, feature_name, value, event_ts FROM {self._table(view)} "
                    f"WHERE entity_key IN ({','.join('?' * len(part))})",
                    part,
                )
                for key, feature, value, seconds in found:
                    stored.setdefault(key, (seconds, {}))[1][feature] = value
        names = sorted(rows.values)
        columns = [rows.values[name] for name in names]
        seconds = _sqlite_seconds(rows.stamps_us)
        out = []
        for r, key in enumerate(rows.keys):
            held = stored.get(key)
            if (
                held is None
                or held[0] != seconds[r]
                or any(held[1].get(name) != column[r] for name, column in zip(names, columns, strict=True))
            ):
                out.append(r)
        return out

    def hold(self, view: str, keys: Sequence[bytes], digest: bytes) -> None:
        """Nothing to record: a row's content is its own record (a pushed row differs from the
        offline one, so the next run rewrites it)."""

    def held_count(self, view: str) -> int:
        with self._lock:
            query = f"SELECT COUNT(DISTINCT entity_key) FROM {self._table(view)}"
            return int(self.conn.execute(query).fetchone()[0])

    def held_keys(self, view: str) -> Iterator[list[bytes]]:
        last = b""
        while True:
            with self._lock:
                page = self.conn.execute(
                    f"SELECT DISTINCT entity_key FROM {self._table(view)} WHERE entity_key > ? "
                    "ORDER BY entity_key LIMIT ?",
                    (last, _HELD_SCAN),
                ).fetchall()
            if not page:
                return
            keys = [k for (k,) in page]
            last = keys[-1]
            yield keys


class RedisBulk:
    """Feast's Redis online store: one hash per entity key + project, a field per view feature
    (murmur3 of "<view>:<feature>") and `_ts:<view>` with the event time as a Timestamp proto."""

    def __init__(self, store: FeatureStore) -> None:
        online = store.config.online_store
        if getattr(online, "key_ttl_seconds", None):
            raise ValueError(
                "bulk writes set no key TTL; leave key_ttl_seconds unset (retention is the step's)"
            )
        self.project = store.project.encode()
        # Feast's own client: the connection string is parsed exactly as for Feast's reads.
        self.client: Any = store.provider.online_store._get_client(online)  # type: ignore[attr-defined]
        self._fields: dict[tuple[str, str], bytes] = {}

    def _field(self, view: str, feature: str) -> bytes:
        from feast.infra.online_stores.helpers import _mmh3

        key = (view, feature)
        if key not in self._fields:
            self._fields[key] = _mmh3(f"{view}:{feature}")
        return self._fields[key]

    def _held_hash(self, view: str) -> bytes:
        return b"seqrank:held:" + self.project + b":" + view.encode()

    def write(self, view: str, rows: Rows, hold: bool = True) -> None:
        from feature_repo.encoding import timestamps  # (encoding imports this module)

        if not len(rows):
            return
        ts_field = f"_ts:{view}".encode()
        fields = [(self._field(view, name), rows.values[name]) for name in rows.values]
        commands: list[list[Any]] = []
        # Each stamp as Feast's Timestamp.FromDatetime gives the row's (UTC) event time.
        for r, (key, stamp) in enumerate(zip(rows.keys, timestamps(rows.stamps_us), strict=True)):
            command = [b"HSET", key + self.project, ts_field, stamp]
            for field, values in fields:
                # redis-py takes bytes, not bytearrays (a memoryview it would send with a socket
                # write of its own, where bytes under 6 KB join the command's buffer).
                value = values[r]
                command += (field, bytes(value) if isinstance(value, bytearray) else value)
            commands.append(command)
        self._send(commands)
        # Once every row is in: a write cut short, or one row refused, leaves rows without
        # holdings (rewritten next run), never holdings for rows that are not there.
        if hold:
            held = itertools.chain.from_iterable(zip(rows.keys, rows.digests, strict=True))
            self._send([[b"HSET", self._held_hash(view), *held]])

    def _send(self, commands: list[list[Any]]) -> None:
        """Run `commands` in order, as one pipeline, and raise the first error reply once all
        have run (Redis runs every command of a pipeline, the refused one aside).

        On a plain Redis (and Sentinel's master) they are packed and written at once on one
        connection of the client's pool, and the replies read after, as Redis' mass-insertion
        advice has it: redis-py's pipeline builds each HSET through its command methods and
        parses every reply in Python, ~10 µs a row of which the Redis server's own work is a
        fraction. A cluster client goes through its pipeline, which routes keys to their nodes.
        """
        import redis

        if not isinstance(self.client, redis.Redis):
            with self.client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                pipe.execute()
            return
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            error = None
            for _ in commands:  # every reply is read, so the connection goes back clean
                try:
                    conn.read_response()
                except redis.ResponseError as exc:
                    error = error or exc
        except BaseException:
            conn.disconnect()  # replies may be left unread: the next user reconnects
            raise
        finally:
            pool.release(conn)
        if error is not None:
            raise error

    def delete(self, view: str, keys: Sequence[bytes]) -> None:
        if not keys:
            return
        # The view's fields only: other views of the same entity (a user's profile) share the hash.
        fields = [f"_ts:{view}".encode(), *self._view_fields(view)]
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self._held_hash(view), *keys)
            for key in keys:
                pipe.hdel(key + self.project, *fields)
            pipe.execute()

    def _view_fields(self, view: str) -> list[bytes]:
        from feature_repo.contracts import feature_names

        return [self._field(view, name) for name in feature_names(view)]

    def changed(self, view: str, rows: Rows) -> list[int]:
        """Rows whose digest differs from the one held (or that have none)."""
        held = self.held(view, rows.keys)
        return [r for r, (h, d) in enumerate(zip(held, rows.digests, strict=True)) if h != d]

    def held(self, view: str, keys: Sequence[bytes]) -> list[bytes | None]:
        """The digest held for each key, None where there is none."""
        if not keys:
            return []
        out: list[bytes | None] = []
        for part in _chunks(keys, _HELD_SCAN):
            out.extend(self.client.hmget(self._held_hash(view), list(part)))
        return out

    def hold(self, view: str, keys: Sequence[bytes], digest: bytes) -> None:
        if keys:
            self.client.hset(self._held_hash(view), mapping=dict.fromkeys(keys, digest))

    def held_count(self, view: str) -> int:
        return int(self.client.hlen(self._held_hash(view)))

    def begin_run(self) -> None:
        """Nothing to prepare: a Redis hash has no index to defer."""

    def end_load(self, view: str) -> None:
        """Nothing deferred."""

    def flush(self) -> None:
        """Nothing to do: Redis persists by its own configuration (RDB snapshots, AOF)."""

    def abort(self) -> None:
        """Nothing to undo: every write was already whole (rows before their holdings)."""

    def held_keys(self, view: str) -> Iterator[list[bytes]]:
        cursor = 0
        while True:
            cursor, page = self.client.hscan(self._held_hash(view), cursor, count=_HELD_SCAN)
            if page:
                yield list(page)
            if cursor == 0:
                return


_OPEN: weakref.WeakKeyDictionary[Any, Bulk] = weakref.WeakKeyDictionary()


def open_bulk(store: FeatureStore) -> Bulk:
    """The bulk writer of `store`'s online store, one per store object (kept while it lives)."""
    bulk = _OPEN.get(store)
    if bulk is None:
        kind = store.config.online_store.type
        if kind == "sqlite":
            bulk = SqliteBulk(store)
        elif kind == "redis":
            bulk = RedisBulk(store)
        else:
            raise ValueError(f"online store type {kind!r}: bulk writes support sqlite and redis")
        _OPEN[store] = bulk
    return bulk
