"""The SQLite adapter of the event store: the embedded default.

One writer connection (``isolation_level=None``; every write is ``BEGIN IMMEDIATE``)
and a few read connections, WAL, ``synchronous=FULL`` by default so an acknowledged
append survives power loss. Concurrent appends are committed in groups: a single
writer task takes every append waiting at that moment, checks each on its own (a
failing one is answered with its error and written not at all), writes the rest in one
transaction and answers them after one fsync.

The readers are aiosqlite connections. The writer is a plain ``sqlite3`` connection
with a thread of its own, and a whole group (its checks, insert and commit) is one
function run there: one hand-off between the event loop and the thread per group,
where a call per statement cost a hand-off each, and each hand-off waits its turn on
a busy event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import aiosqlite

from feedsvc.domain.events import (
    RecordedEvent,
    ValidEvent,
)
from feedsvc.errors import (
    ImportFailed,
    NotAFeedsvcDatabase,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from feedsvc.store.decide import (
    COLUMNS,
    STORED_COLUMNS,
    AppendRequest,
    LogTail,
    Outcome,
    StoredEvent,
    decide_group,
    decide_import,
)
from feedsvc.store.group import GroupCommitStore
from feedsvc.store.port import AppendResult, EncodedEvents, Expected

APPLICATION_ID = 0x66656564  # "feed"

MIGRATIONS: list[str] = [
    # 1: the log, append-only in the database itself
    """
    CREATE TABLE events (
        position       INTEGER PRIMARY KEY,
        id             TEXT    NOT NULL UNIQUE,
        stream         TEXT    NOT NULL,
        version        INTEGER NOT NULL CHECK (version >= 1),
        type           TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        occurred_at    TEXT    NOT NULL,
        recorded_at    TEXT    NOT NULL,
        data           TEXT    NOT NULL,
        metadata       TEXT    NOT NULL,
        UNIQUE (stream, version)
    ) STRICT;
    CREATE INDEX events_recorded_at ON events (recorded_at);
    CREATE INDEX events_type ON events (type, position);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'feedsvc events are append-only: UPDATE refused'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'feedsvc events are append-only: DELETE refused'); END;
    """,
    # 2: was the tokens table; the token store's adapter (feedsvc.store.sqlite_tokens)
    # owns it now and makes it when missing
    "",
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = ", ".join(COLUMNS)
_EXPORT_JSON = (
    'format(\'{"position":%d,"id":%s,"stream":%s,"version":%d,"type":%s,'
    '"schema_version":%d,"occurred_at":%s,"recorded_at":%s,"data":%s,'
    '"metadata":%s}\', position, json_quote(id), json_quote(stream), version, '
    "json_quote(type), schema_version, json_quote(occurred_at), json_quote(recorded_at), "
    "data, metadata)"
)
"""One event in its export form, as ``orjson.dumps(export_dict(*row))`` writes it (the
contract suite holds the two equal): data and metadata are stored as JSON already."""
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_MAX_PARAMS = 500
T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


def _translate(e: BaseException, path: Path) -> StoreError:
    """A driver error as the store's own, naming the file."""
    text = str(e)
    if isinstance(e, sqlite3.OperationalError) and "locked" in text:
        return StoreUnavailable(f"database {path} is locked by another process; try again")
    if isinstance(e, sqlite3.DatabaseError) and "not a database" in text:
        return NotAFeedsvcDatabase(f"{path} is not a feedsvc database (not SQLite at all)")
    if isinstance(e, sqlite3.OperationalError) and "readonly" in text:
        return StoreUnavailable(f"database {path} is read-only: {text}")
    if isinstance(e, sqlite3.OperationalError) and ("disk" in text or "full" in text):
        return StoreUnavailable(f"database {path} cannot be written: {text}")
    if isinstance(e, sqlite3.OperationalError) and "unable to open" in text:
        return StoreUnavailable(
            f"cannot open database {path}: check the folder exists and is writable"
        )
    return StoreUnavailable(f"database {path}: {text}")


class SQLiteEventStore(GroupCommitStore):
    """The event store in one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
        readers: int = 2,
        max_group: int = 2000,
        create: bool = True,
    ) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self.reader_count = max(1, readers)
        self.max_group = max_group
        self.create = create
        self._writer: sqlite3.Connection | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = 0
        super().__init__(self._commit_group, lambda e: _translate(e, self.path), max_group)

    # -- life cycle ---------------------------------------------------------------

    async def open(self) -> None:
        if not self.path.parent.is_dir():
            raise StoreUnavailable(
                f"cannot open database {self.path}: folder {self.path.parent} does not exist"
            )
        if not self.create and not self.path.exists():
            raise StoreUnavailable(f"no database at {self.path}")
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="feedsvc-store-writer")
        try:
            self._writer = await self._on_writer(self._connect_writer)
            await self._on_writer(self._migrate)
            for _ in range(self.reader_count):
                self._readers.append(await self._connect(readonly=True))
            self._head = await self._on_writer(self._read_head)
        except sqlite3.Error as e:
            await self.close()
            raise _translate(e, self.path) from e
        except StoreError:
            await self.close()
            raise
        self._group.start()

    async def _on_writer(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in the writer's thread (the only one that uses it)."""
        if self._writer_thread is None:
            raise StoreUnavailable("the event store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, functools.partial(fn, *args))

    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"file:{self.path}?mode=rwc",
            uri=True,
            isolation_level=None,
            timeout=self.busy_timeout_ms / 1000,
            check_same_thread=False,  # made in the writer's thread, used only there
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _connect(self, readonly: bool) -> aiosqlite.Connection:
        uri = f"file:{self.path}?mode={'ro' if readonly else 'rwc'}"
        conn = await aiosqlite.connect(
            uri, uri=True, isolation_level=None, timeout=self.busy_timeout_ms / 1000
        )
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def writer_pragmas(self) -> tuple[int, str]:
        """The writer connection's ``synchronous`` level (0 OFF … 3 EXTRA) and journal
        mode, as SQLite reports them (what a benchmark states it ran with)."""

        def read() -> tuple[int, str]:
            conn = self._conn()
            return (
                int(conn.execute("PRAGMA synchronous").fetchone()[0]),
                str(conn.execute("PRAGMA journal_mode").fetchone()[0]),
            )

        return await self._on_writer(read)

    def _conn(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreUnavailable("the event store is closed")
        return self._writer

    def _migrate(self) -> None:
        conn = self._conn()
        app_id = (conn.execute("PRAGMA application_id").fetchone() or (0,))[0]
        version = (conn.execute("PRAGMA user_version").fetchone() or (0,))[0]
        objects = (conn.execute("SELECT count(*) FROM sqlite_schema").fetchone() or (0,))[0]
        if app_id != APPLICATION_ID and (app_id != 0 or objects):
            raise NotAFeedsvcDatabase(
                f"{self.path} is an SQLite database but not a feedsvc one; "
                "point data_dir/database at a feedsvc database or a new file"
            )
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self.path} has schema version {version}, made by a newer feedsvc; "
                f"this one knows up to {SCHEMA_VERSION}. Upgrade feedsvc."
            )
        if version == SCHEMA_VERSION:
            return

        def migrate(conn: sqlite3.Connection) -> None:
            for script in MIGRATIONS[version:]:
                for statement in _statements(script):
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        self._transaction(migrate)

    async def close(self) -> None:
        await self._group.close()
        for conn in self._readers:
            with contextlib.suppress(Exception):
                await conn.close()
        self._readers = []
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._on_writer(self._writer.close)
            self._writer = None
        if self._writer_thread is not None:
            self._writer_thread.shutdown(wait=True)
            self._writer_thread = None

    # -- writing -----------------------------------------------------------------

    def submit(
        self, stream: str, events: Sequence[ValidEvent], expected: Expected = "any"
    ) -> asyncio.Future[AppendResult]:
        if self._writer is None:
            raise StoreUnavailable("the event store is closed")
        return self._group.submit(stream, events, expected)

    async def _commit_group(
        self, requests: list[AppendRequest]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        return await self._on_writer(self._write_group, requests)

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(writer)`` in one ``BEGIN IMMEDIATE`` transaction, committed if it
        returns and rolled back if it raises (in the writer's thread)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        return done

    def _write_group(
        self, requests: list[AppendRequest]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        """Check, write and commit a group (in the writer's thread)."""

        def write(conn: sqlite3.Connection) -> tuple[list[Outcome], list[RecordedEvent]]:
            outcomes, rows = self._decide(conn, requests)
            if rows:
                conn.executemany(_INSERT, [row.row() for row in rows])
            return outcomes, rows

        return self._transaction(write)

    def _decide(
        self, conn: sqlite3.Connection, requests: list[AppendRequest]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        """What :func:`~feedsvc.store.decide.decide_group` needs, read in the
        transaction that writes the group, and its decisions."""
        last = conn.execute(
            "SELECT position, recorded_at FROM events ORDER BY position DESC LIMIT 1"
        ).fetchone()
        tail = LogTail(int(last[0]), str(last[1])) if last else LogTail(0, "")
        versions = _stream_versions(conn, {r.stream for r in requests})
        ids = sorted({e.id for r in requests for e in r.events})
        existing: dict[str, StoredEvent] = {}
        for chunk in _chunks(ids):
            sql = (
                f"SELECT {', '.join(STORED_COLUMNS)} FROM events "
                f"WHERE id IN ({','.join('?' * len(chunk))})"
            )
            existing.update({row[0]: StoredEvent(*row) for row in conn.execute(sql, chunk)})
        return decide_group(requests, tail, versions, existing, _now())

    async def import_events(self, events: Sequence[RecordedEvent]) -> int:
        if self._writer is None:
            raise StoreUnavailable("the event store is closed")
        async with self._group.lock:
            try:
                written, head = await self._on_writer(self._commit_import, events)
            except sqlite3.Error as e:
                raise _translate(e, self.path) from e
            if written:
                self._advance(head)
            return written

    def _commit_import(self, events: Sequence[RecordedEvent]) -> tuple[int, int]:
        """Import in one transaction (in the writer's thread); (events written, head)."""
        written = self._transaction(lambda conn: self._import(conn, events))
        return written, self._read_head()

    def _import(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> int:
        """Check and insert (in the writer's thread); how many events were written."""
        head = self._read_head()
        present: dict[int, RecordedEvent] = {}
        for chunk in _chunks([e.position for e in events if e.position <= head]):
            sql = f"SELECT {_COLUMNS} FROM events WHERE position IN ({','.join('?' * len(chunk))})"
            present.update({int(row[0]): RecordedEvent(*row) for row in conn.execute(sql, chunk)})
        versions = _stream_versions(conn, {e.stream for e in events if e.position > head})
        new = decide_import(events, head, present, versions)
        if new:
            try:
                conn.executemany(_INSERT, [event.row() for event in new])
            except sqlite3.IntegrityError as e:
                raise ImportFailed(0, f"the file conflicts with the log: {e}") from e
        return len(new)

    # -- reading -----------------------------------------------------------------

    def _reader(self) -> aiosqlite.Connection:
        if not self._readers:
            raise StoreUnavailable("the event store is closed")
        self._next_reader = (self._next_reader + 1) % len(self._readers)
        return self._readers[self._next_reader]

    async def _fetch(self, sql: str, params: Iterable[object] = ()) -> list[sqlite3.Row]:
        try:
            async with self._reader().execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as e:
            raise _translate(e, self.path) from e

    async def read_all(
        self,
        after: int = 0,
        limit: int = 100,
        *,
        types: Sequence[str] | None = None,
        stream: str | None = None,
        upto: int | None = None,
    ) -> list[RecordedEvent]:
        where, params = _filters(after, types, stream, upto)
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY position LIMIT ?",
            [*params, limit],
        )
        return [RecordedEvent(*row) for row in rows]

    async def read_all_json(
        self,
        after: int = 0,
        limit: int = 100,
        *,
        types: Sequence[str] | None = None,
        stream: str | None = None,
        upto: int | None = None,
    ) -> EncodedEvents:
        # SQLite writes the page: no row becomes Python objects, and the work runs in
        # the connection's thread without the GIL
        where, params = _filters(after, types, stream, upto)
        rows = await self._fetch(
            f"SELECT count(*), max(position), CAST(group_concat(event, ',') AS BLOB) FROM "
            f"(SELECT position, {_EXPORT_JSON} AS event FROM events WHERE {where} "
            "ORDER BY position LIMIT ?)",
            [*params, limit],
        )
        count, last, encoded = rows[0]
        return EncodedEvents(count, last, encoded or b"")

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND version >= ? "
            "ORDER BY version LIMIT ?",
            (stream, from_version, -1 if limit is None else limit),
        )
        return [RecordedEvent(*row) for row in rows]

    async def find(self, ids: Sequence[str]) -> list[RecordedEvent]:
        found: list[RecordedEvent] = []
        for chunk in _chunks(sorted(set(ids))):
            rows = await self._fetch(
                f"SELECT {_COLUMNS} FROM events WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.extend(RecordedEvent(*row) for row in rows)
        return sorted(found, key=lambda e: e.position)

    async def head(self) -> int:
        rows = await self._fetch("SELECT COALESCE(MAX(position), 0) FROM events")
        return int(rows[0][0])

    def _read_head(self) -> int:
        """The log's head, read by the writer (in its thread)."""
        row = self._conn().execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()
        return int(row[0]) if row else 0

    async def stream_version(self, stream: str) -> int:
        rows = await self._fetch(
            "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?", (stream,)
        )
        return int(rows[0][0])

    async def streams(self) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT stream FROM events ORDER BY stream")
        return [str(r[0]) for r in rows]

    async def position_at(self, recorded_at: str) -> int:
        rows = await self._fetch(
            "SELECT COALESCE(MAX(position), 0) FROM events WHERE recorded_at <= ?",
            (recorded_at,),
        )
        return int(rows[0][0])

    async def wait_for(self, position: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._head >= position:
                return self._head
            # another process may append too: look at the file now and then
            current = await self.head()
            if current >= position:
                self._advance(current)
                return current
            remaining = deadline - loop.time()
            if remaining <= 0:
                return current
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._committed.wait(), min(remaining, 1.0))


def _statements(script: str) -> list[str]:
    """Split a migration script into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buf = ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _stream_versions(conn: sqlite3.Connection, streams: set[str]) -> dict[str, int]:
    """The current version of each of ``streams`` that exists."""
    versions: dict[str, int] = {}
    for chunk in _chunks(sorted(streams)):
        sql = (
            "SELECT stream, MAX(version) FROM events WHERE stream IN "
            f"({','.join('?' * len(chunk))}) GROUP BY stream"
        )
        versions.update({s: v for s, v in conn.execute(sql, chunk)})
    return versions


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), _MAX_PARAMS):
        yield items[i : i + _MAX_PARAMS]


def _filters(
    after: int, types: Sequence[str] | None, stream: str | None, upto: int | None
) -> tuple[str, list[object]]:
    """The WHERE clause of a read of the log, and its parameters."""
    where = ["position > ?"]
    params: list[object] = [after]
    if upto is not None:
        where.append("position <= ?")
        params.append(upto)
    if stream is not None:
        where.append("stream = ?")
        params.append(stream)
    if types:
        where.append(f"type IN ({','.join('?' * len(types))})")
        params.extend(types)
    return " AND ".join(where), params
