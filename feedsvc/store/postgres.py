"""The PostgreSQL adapter of the event store: the log on a server several replicas share.

Every write transaction (a group commit of appends, or an import) starts by taking one
transaction-scoped advisory lock, so positions are assigned by one writer at a time
across every process and commit in position order: a follower reading after a position
never skips an event committed late by another process. Under the lock it reads the
log's tail, the group's stream versions and the stored events with the group's ids,
lets :func:`~feedsvc.store.decide.decide_group` decide, inserts the rows and sends
``NOTIFY feedsvc_events, '<new head>'`` (delivered at commit).

The database itself keeps the log append-only: triggers refuse ``UPDATE``, ``DELETE``
and ``TRUNCATE`` on ``events``, and writes run as the ``feedsvc_writer`` role, which
may only read and insert.

Each store keeps one listening connection: a commit by any process wakes its
``wait_for`` waiters at once. If that connection drops it is made again, and
meanwhile waiters look at the head every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from feedsvc.domain.events import RecordedEvent, ValidEvent
from feedsvc.errors import ImportFailed, StoreError, StoreUnavailable
from feedsvc.store import pg
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
from feedsvc.store.port import AppendResult, Expected

log = logging.getLogger(__name__)

COMPONENT = "events"
"""The name of this adapter's migrations in ``feedsvc_migrations``."""

WRITER_ROLE = "feedsvc_writer"
"""The role writes run as: it may read and insert events, never update or delete."""

CHANNEL = "feedsvc_events"
"""The channel every commit notifies, with the new head as payload."""

WRITE_LOCK = 0x66656564_00000002
"""The advisory lock every write transaction of the log holds (position assignment)."""

POLL_S = 1.0
"""How often waiters look at the head while the listening connection is down."""

MIGRATIONS: list[str] = [
    # 1: the log, append-only in the database itself, and the role that writes it
    f"""
    CREATE TABLE events (
        position       bigint  PRIMARY KEY CHECK (position >= 1),
        id             text    COLLATE "C" NOT NULL UNIQUE,
        stream         text    COLLATE "C" NOT NULL,
        version        integer NOT NULL CHECK (version >= 1),
        type           text    COLLATE "C" NOT NULL,
        schema_version integer NOT NULL,
        occurred_at    text    COLLATE "C" NOT NULL,
        recorded_at    text    COLLATE "C" NOT NULL,
        data           text    NOT NULL,
        metadata       text    NOT NULL,
        UNIQUE (stream, version)
    );
    CREATE INDEX events_recorded_at ON events (recorded_at);
    CREATE INDEX events_type ON events (type, position);
    CREATE FUNCTION feedsvc_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'feedsvc events are append-only: % refused', TG_OP
            USING ERRCODE = 'restrict_violation';
    END
    $$;
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        FOR EACH ROW EXECUTE FUNCTION feedsvc_events_append_only();
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION feedsvc_events_append_only();
    CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION feedsvc_events_append_only();
    DO $$
    BEGIN
        BEGIN
            CREATE ROLE {WRITER_ROLE} NOLOGIN;
        EXCEPTION
            -- roles are cluster-wide: another database or process may have made it
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'feedsvc: % may not create roles; writes run as itself',
                    current_user;
        END;
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{WRITER_ROLE}') THEN
            REVOKE ALL ON events FROM {WRITER_ROLE};
            GRANT SELECT, INSERT ON events TO {WRITER_ROLE};
            BEGIN
                EXECUTE format('GRANT USAGE ON SCHEMA %I TO {WRITER_ROLE}', current_schema());
                EXECUTE format('GRANT {WRITER_ROLE} TO %I', current_user);
            EXCEPTION
                WHEN insufficient_privilege OR invalid_grant_operation THEN
                    RAISE NOTICE 'feedsvc: % cannot take {WRITER_ROLE}; writes run as itself',
                        current_user;
            END;
        END IF;
    END
    $$;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = ", ".join(COLUMNS)
_INSERT = (
    f"INSERT INTO events ({_COLUMNS}) SELECT * FROM unnest("
    "$1::bigint[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::integer[], "
    "$7::text[], $8::text[], $9::text[], $10::text[])"
)


_TAIL_VERSIONS_AND_IDS = f"""
(SELECT 't', NULL::text, position, NULL::text, NULL::integer, NULL::text, NULL::integer,
        NULL::text, NULL::text, recorded_at
   FROM events ORDER BY position DESC LIMIT 1)
UNION ALL
(SELECT 'v', NULL, NULL, stream, MAX(version), NULL, NULL, NULL, NULL, NULL
   FROM events WHERE stream = ANY($1::text[]) GROUP BY stream)
UNION ALL
(SELECT 'e', {", ".join(STORED_COLUMNS)} FROM events WHERE id = ANY($2::text[]))
"""
"""Everything a group's decisions read, in one round trip: the log's tail (``t``), the
version of each of the group's streams (``v``) and the stored events with the group's
ids (``e``, in :data:`~feedsvc.store.decide.STORED_COLUMNS` order)."""

_INSERT_AND_NOTIFY = f"WITH written AS ({_INSERT}) SELECT pg_notify('{CHANNEL}', $11)"
"""The group's rows and the commit's notification (delivered when it commits), in one
round trip."""


def _columns(events: Sequence[RecordedEvent]) -> list[list[object]]:
    """The events as one list per column, for ``unnest`` in :data:`_INSERT`."""
    return [list(column) for column in zip(*(e.row() for e in events), strict=True)]


def _now() -> datetime:
    return datetime.now(UTC)


class PostgresEventStore(GroupCommitStore):
    """The event store in a PostgreSQL database, shared by any number of processes."""

    def __init__(self, url: str, *, max_group: int = 2000, readers: int = 4) -> None:
        self.url = url
        self.max_group = max_group
        self.reader_count = max(1, readers)
        self._readers: Any = None
        self._writer: Any = None
        self._listener: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        self._listening = False
        self._lost = asyncio.Event()
        super().__init__(self._commit_group, lambda e: pg.translate(e, self.url), max_group)
        self._as_writer = ""
        self._begin = ""
        """The first round trip of a write transaction: begin, take the writer's role,
        then the lock that makes this the only writer of the log until it commits."""

    # -- life cycle ---------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._writer = await pg.create_pool(self.url, min_size=1, max_size=1)
            async with self._writer.acquire() as conn:
                await pg.migrate(conn, COMPONENT, MIGRATIONS, self.url)
                member = await conn.fetchval(
                    "SELECT pg_has_role(current_user, $1, 'MEMBER')", WRITER_ROLE
                )
            self._as_writer = f"SET LOCAL ROLE {WRITER_ROLE}" if member else ""
            self._begin = (
                f"BEGIN; {self._as_writer + ';' if member else ''} "
                f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"
            )
            self._readers = await pg.create_pool(self.url, min_size=1, max_size=self.reader_count)
            await self._listen()
        except BaseException as e:
            await self.close()
            if isinstance(e, StoreError):
                raise
            if isinstance(e, Exception):
                raise pg.translate(e, self.url) from e
            raise
        self._listen_task = asyncio.create_task(self._keep_listening(), name="feedsvc-pg-listen")
        self._group.start()

    async def close(self) -> None:
        await self._group.close()
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        await self._drop_listener()
        for pool in (self._readers, self._writer):
            if pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pool.close(), pg.CONNECT_TIMEOUT_S)
        self._readers = self._writer = None

    # -- the listening connection -------------------------------------------------

    async def _listen(self) -> None:
        """Connect the listening connection, then read the head (so no commit made
        while it was down is missed) and wake the waiters."""
        lost = asyncio.Event()
        conn = await pg.connect(self.url)
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._notified)
            head = await conn.fetchval("SELECT COALESCE(MAX(position), 0) FROM events")
        except BaseException:
            await conn.close()
            raise
        self._listener, self._lost = conn, lost
        self._listening = True
        self._advance(int(head))

    async def _drop_listener(self) -> None:
        self._listening = False
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), pg.CONNECT_TIMEOUT_S)

    async def _keep_listening(self) -> None:
        """Make the listening connection again whenever it drops."""
        while True:
            await self._lost.wait()
            await self._drop_listener()
            self._wake()  # waiters fall back to polling the head
            delay = 0.1
            while True:
                try:
                    await self._listen()
                    log.info("listening for commits on %s again", pg.display(self.url))
                    break
                except (StoreError, OSError, asyncpg.PostgresError) as e:
                    log.warning("cannot listen for commits on %s: %s", pg.display(self.url), e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self._advance(int(payload))

    # -- writing -----------------------------------------------------------------

    def submit(
        self, stream: str, events: Sequence[ValidEvent], expected: Expected = "any"
    ) -> asyncio.Future[AppendResult]:
        if self._writer is None:
            raise StoreUnavailable("the event store is closed")
        if "\x00" in stream:
            raise ValueError("a stream name cannot hold U+0000 (PostgreSQL text cannot)")
        return self._group.submit(stream, events, expected)

    async def _begin_write(self, conn: Any) -> None:
        """The first statements of every write transaction: the role, then the lock
        that makes this the only writer of the log until it commits."""
        if self._as_writer:
            await conn.execute(self._as_writer)
        await conn.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")

    async def _commit_group(
        self, requests: list[AppendRequest]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        """Decide and write a group in one transaction, holding the write lock for
        three round trips: begin and lock; read what the decisions need; insert and
        notify, then commit."""
        if self._writer is None:
            raise StoreUnavailable("the event store is closed")
        async with self._writer.acquire() as conn:
            await conn.execute(self._begin)
            try:
                outcomes, rows = await self._decide(conn, requests)
                if rows:
                    columns = _columns(rows)
                    await conn.execute(_INSERT_AND_NOTIFY, *columns, str(rows[-1].position))
                await conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
                raise
        return outcomes, rows

    async def _decide(
        self, conn: Any, requests: list[AppendRequest]
    ) -> tuple[list[Outcome], list[RecordedEvent]]:
        """What :func:`~feedsvc.store.decide.decide_group` needs, read under the write
        lock in the transaction that writes the group, and its decisions."""
        streams = sorted({r.stream for r in requests})
        ids = sorted({e.id for r in requests for e in r.events})
        tail = LogTail(0, "")
        versions: dict[str, int] = {}
        existing: dict[str, StoredEvent] = {}
        for row in await conn.fetch(_TAIL_VERSIONS_AND_IDS, streams, ids):
            kind = row[0]
            if kind == "t":
                tail = LogTail(int(row[2]), str(row[9]))
            elif kind == "v":
                versions[str(row[3])] = int(row[4])
            else:
                existing[str(row[1])] = StoredEvent(*row[1:])
        return decide_group(requests, tail, versions, existing, _now())

    async def import_events(self, events: Sequence[RecordedEvent]) -> int:
        if self._writer is None:
            raise StoreUnavailable("the event store is closed")
        for index, event in enumerate(events, start=1):
            for name in ("id", "stream", "type", "occurred_at", "recorded_at"):
                if "\x00" in getattr(event, name):
                    raise ImportFailed(index, f"{name} holds U+0000, which PostgreSQL refuses")
        async with self._group.lock:
            try:
                async with self._writer.acquire() as conn, conn.transaction():
                    await self._begin_write(conn)
                    written, head = await self._import(conn, events)
                    if written:
                        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(head))
            except (StoreError, ImportFailed):
                raise
            except Exception as e:
                raise pg.translate(e, self.url) from e
            if written:
                self._advance(head)
            return written

    async def _import(self, conn: Any, events: Sequence[RecordedEvent]) -> tuple[int, int]:
        """Check and insert (under the write lock); (events written, head after)."""
        head = int(await conn.fetchval("SELECT COALESCE(MAX(position), 0) FROM events"))
        present = {
            int(r[0]): RecordedEvent(*r)
            for r in await conn.fetch(
                f"SELECT {_COLUMNS} FROM events WHERE position = ANY($1::bigint[])",
                [e.position for e in events if e.position <= head],
            )
        }
        streams = sorted({e.stream for e in events if e.position > head})
        versions = {
            str(r[0]): int(r[1])
            for r in await conn.fetch(
                "SELECT stream, MAX(version) FROM events WHERE stream = ANY($1::text[]) "
                "GROUP BY stream",
                streams,
            )
        }
        new = decide_import(events, head, present, versions)
        if new:
            try:
                await conn.execute(_INSERT, *_columns(new))
            except asyncpg.IntegrityConstraintViolationError as e:
                raise ImportFailed(0, f"the file conflicts with the log: {e}") from e
        return len(new), head + len(new)

    # -- reading -----------------------------------------------------------------

    async def _fetch(self, sql: str, *params: object) -> list[Any]:
        if self._readers is None:
            raise StoreUnavailable("the event store is closed")
        try:
            return list(await self._readers.fetch(sql, *params))
        except Exception as e:
            raise pg.translate(e, self.url) from e

    async def _value(self, sql: str, *params: object) -> int:
        rows = await self._fetch(sql, *params)
        return int(rows[0][0])

    async def read_all(
        self,
        after: int = 0,
        limit: int = 100,
        *,
        types: Sequence[str] | None = None,
        stream: str | None = None,
        upto: int | None = None,
    ) -> list[RecordedEvent]:
        where = ["position > $1"]
        params: list[object] = [after]
        if upto is not None:
            params.append(upto)
            where.append(f"position <= ${len(params)}")
        if stream is not None:
            params.append(stream)
            where.append(f"stream = ${len(params)}")
        if types:
            params.append(list(types))
            where.append(f"type = ANY(${len(params)}::text[])")
        params.append(limit)
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(where)} "
            f"ORDER BY position LIMIT ${len(params)}",
            *params,
        )
        return [RecordedEvent(*row) for row in rows]

    async def read_stream(
        self, stream: str, from_version: int = 1, limit: int | None = None
    ) -> list[RecordedEvent]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM events WHERE stream = $1 AND version >= $2 "
            "ORDER BY version LIMIT $3",
            stream,
            from_version,
            limit,
        )
        return [RecordedEvent(*row) for row in rows]

    async def find(self, ids: Sequence[str]) -> list[RecordedEvent]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM events WHERE id = ANY($1::text[]) ORDER BY position",
            sorted(set(ids)),
        )
        return [RecordedEvent(*row) for row in rows]

    async def head(self) -> int:
        return await self._value("SELECT COALESCE(MAX(position), 0) FROM events")

    async def stream_version(self, stream: str) -> int:
        return await self._value(
            "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = $1", stream
        )

    async def streams(self) -> list[str]:
        rows = await self._fetch("SELECT DISTINCT stream FROM events ORDER BY stream")
        return [str(r[0]) for r in rows]

    async def position_at(self, recorded_at: str) -> int:
        return await self._value(
            "SELECT COALESCE(MAX(position), 0) FROM events WHERE recorded_at <= $1",
            recorded_at,
        )

    async def wait_for(self, position: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._head >= position:
                return self._head
            if not self._listening:
                self._advance(await self.head())
                if self._head >= position:
                    return self._head
            remaining = deadline - loop.time()
            if remaining <= 0:
                return max(self._head, await self.head())
            wait = remaining if self._listening else min(remaining, POLL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._committed.wait(), wait)
