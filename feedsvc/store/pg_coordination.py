"""The coordination of replicas through PostgreSQL (:class:`PostgresCoordinator`).

* **Rate limits**: one row per key in ``rate_buckets``, refilled and spent by a single
  ``INSERT … ON CONFLICT DO UPDATE … WHERE`` that reads the server's
  ``clock_timestamp()``, so every replica spends from the same bucket whatever their
  own clocks say. The table
  is ``UNLOGGED``: buckets are worth nothing after a crash of the server.
* **Leadership**: a session-level advisory lock per job name, taken with
  ``pg_try_advisory_lock`` on a connection of its own. When the leading process dies
  its connection drops and the server releases the lock; another replica takes it on
  its next try.
* **Rebuild broadcast**: ``NOTIFY feedsvc_rebuild``, heard through ``LISTEN`` on a
  connection of its own that is made again whenever it drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from typing import Any

from feedsvc.errors import StoreError
from feedsvc.store import pg
from feedsvc.store.coordination import Coordinator, RebuildListener, bucket_size, refill

log = logging.getLogger("feedsvc.store")

COMPONENT = "coordination"
MIGRATIONS = (
    """
    CREATE UNLOGGED TABLE rate_buckets (
        key        text PRIMARY KEY,
        level      double precision NOT NULL,
        updated_at timestamptz NOT NULL
    )
    """,
)
"""The schema this adapter owns, one script per version (``pg.migrate``)."""

REBUILD_CHANNEL = "feedsvc_rebuild"
QUERY_TIMEOUT_S = 5.0
LISTEN_CHECK_S = 10.0
"""How often the listening connection is checked when it stays silent."""
RECONNECT_MAX_S = 30.0

_ELAPSED = "GREATEST(0, EXTRACT(EPOCH FROM excluded.updated_at - b.updated_at))::float8"
_REFILLED = f"LEAST($3::float8, b.level + {_ELAPSED} * $2::float8)"
TAKE = f"""
INSERT INTO rate_buckets AS b (key, level, updated_at)
VALUES ($1, $3::float8 - $4::float8, clock_timestamp())
ON CONFLICT (key) DO UPDATE
    SET level = {_REFILLED} - $4::float8, updated_at = excluded.updated_at
    WHERE {_REFILLED} >= $4::float8
RETURNING b.level
"""
"""Spend from a bucket in one statement: $1 key, $2 rate, $3 burst, $4 cost (at most
the burst). A new bucket starts full; an existing one is refilled for the time since
it was last spent from, by the server's clock, and spent from only if that covers the
cost. A row comes back if and only if the request is allowed."""
LEVEL = """
SELECT level, GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - updated_at))::float8
    AS elapsed
FROM rate_buckets WHERE key = $1
"""
"""A refused bucket's level and the seconds since it was last spent from: how long
the request would have to wait."""


def lock_key(name: str) -> int:
    """The advisory lock (a signed 64-bit key) of leadership ``name``."""
    digest = hashlib.sha256(f"feedsvc:lead:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresCoordinator(Coordinator):
    """Replicas coordinated through one PostgreSQL database."""

    broadcasts_rebuilds = True

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: Any = None
        self._lead_conn: Any = None
        self._lead_guard = asyncio.Lock()
        self._held: set[str] = set()
        self._listen_conn: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        self._listeners: list[RebuildListener] = []

    async def open(self) -> None:
        """Connect a pool and migrate the ``coordination`` schema."""
        self._pool = await pg.create_pool(self.url, min_size=1, max_size=self.pool_size)
        try:
            async with self._pool.acquire() as conn:
                await pg.migrate(conn, COMPONENT, MIGRATIONS, self.url)
        except BaseException as e:
            await self._pool.close()
            self._pool = None
            if isinstance(e, Exception) and not isinstance(e, StoreError):
                raise pg.translate(e, self.url) from e
            raise

    async def close(self) -> None:
        """Stop listening, give up every leadership, close the pool."""
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        self._listeners.clear()
        for conn in (self._listen_conn, self._lead_conn):
            if conn is not None:
                await _close(conn)
        self._listen_conn = self._lead_conn = None
        self._held.clear()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- rate limits ------------------------------------------------------------------

    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> float:
        """The bucket of ``key`` in ``rate_buckets``, shared by every replica."""
        if rate <= 0:
            return 0.0
        burst = bucket_size(burst)
        if cost > burst:
            return (cost - burst) / rate  # no bucket ever holds that much
        try:
            allowed = await self._pool.fetchrow(
                TAKE, key, float(rate), burst, float(cost), timeout=QUERY_TIMEOUT_S
            )
            if allowed is not None:
                return 0.0
            row = await self._pool.fetchrow(LEVEL, key, timeout=QUERY_TIMEOUT_S)
        except Exception as e:
            raise pg.translate(e, self.url) from e
        if row is None:  # gone meanwhile: a new bucket would be full
            return 1e-6
        level = refill(float(row["level"]), float(row["elapsed"]), rate, burst)
        return max((cost - level) / rate, 1e-6)

    # -- leadership -------------------------------------------------------------------

    async def lead(self, name: str) -> bool:
        """Hold (or try to take) the advisory lock of ``name`` on this process's
        leadership connection. False, not an error, while the server cannot be
        reached: a replica that cannot see the database must not lead."""
        async with self._lead_guard:
            conn = self._lead_conn
            if conn is not None and conn.is_closed():
                log.warning("the leadership connection dropped: leading nothing until retaken")
                conn = self._lead_conn = None
                self._held.clear()
            try:
                if conn is None:
                    conn = self._lead_conn = await pg.connect(self.url)
                if name in self._held:
                    await conn.fetchval("SELECT 1", timeout=QUERY_TIMEOUT_S)
                    return True
                taken = await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)", lock_key(name), timeout=QUERY_TIMEOUT_S
                )
            except Exception as e:
                log.warning("cannot try to lead %s: %s", name, e)
                if self._lead_conn is not None:
                    await _close(self._lead_conn)
                self._lead_conn = None
                self._held.clear()
                return False
            if taken:
                self._held.add(name)
                log.info("this replica now leads %s", name)
            return bool(taken)

    # -- rebuild broadcast ------------------------------------------------------------

    async def announce_rebuild(self) -> None:
        """``NOTIFY feedsvc_rebuild``; the payload names the announcing host and
        process, for the replicas' logs."""
        sender = f"{socket.gethostname()}:{os.getpid()}"
        try:
            await self._pool.execute(
                "SELECT pg_notify($1, $2)", REBUILD_CHANNEL, sender, timeout=QUERY_TIMEOUT_S
            )
        except Exception as e:
            raise pg.translate(e, self.url) from e

    async def subscribe_rebuild(self, listener: RebuildListener) -> None:
        """Call ``listener`` on every announcement. The first subscription connects
        and listens before it returns; the connection is made again if it drops."""
        self._listeners.append(listener)
        if self._listen_task is not None:
            return
        lost = await self._listen()
        self._listen_task = asyncio.create_task(
            self._keep_listening(lost), name="feedsvc-rebuild-listener"
        )

    async def _listen(self) -> asyncio.Event:
        conn = await pg.connect(self.url)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(REBUILD_CHANNEL, self._heard)
        except Exception as e:
            await _close(conn)
            raise pg.translate(e, self.url) from e
        self._listen_conn = conn
        return lost

    async def _keep_listening(self, lost: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), LISTEN_CHECK_S)
            conn = self._listen_conn
            if not lost.is_set() and conn is not None and not conn.is_closed():
                try:
                    await conn.fetchval("SELECT 1", timeout=QUERY_TIMEOUT_S)
                    continue
                except Exception as e:
                    log.warning("the rebuild listener's connection fails: %s", e)
            if conn is not None:
                await _close(conn)
            self._listen_conn = None
            lost = await self._listen_again()

    async def _listen_again(self) -> asyncio.Event:
        delay = 0.25
        while True:
            try:
                lost = await self._listen()
            except StoreError as e:
                log.warning("cannot listen for rebuilds (again in %.1f s): %s", delay, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            log.warning(
                "listening for rebuilds again; an announcement made while disconnected "
                "was missed (run `feedsvc rebuild` again if one was)"
            )
            return lost

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        log.info("a rebuild was announced by %s", payload or "another process")
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("a rebuild listener failed")


async def _close(conn: Any) -> None:
    """Close a connection, however broken it is."""
    try:
        await asyncio.wait_for(conn.close(), QUERY_TIMEOUT_S)
    except Exception:
        conn.terminate()
