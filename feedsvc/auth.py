"""Bearer tokens of the append API: scopes, hashed storage, rate limits.

A token is ``fsv_`` followed by 43 URL-safe characters (256 random bits). It is shown
once, when it is created; the database keeps only its SHA-256, so a copy of the
database lets nobody append. Presented tokens are hashed and compared with every
active hash in constant time (:func:`hmac.compare_digest`).

Scopes:

``admin``
    everything.
``append:*``
    append to every story and open new ones.
``append:<slug>[,<slug>...]``
    append to the named stories only; opening a new story is refused.

:class:`TokenStore` is the port; :class:`SQLiteTokenStore` keeps tokens in the
``tokens`` table of the events database (created by its migration 2) through a
connection of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import math
import os
import re
import secrets
import sqlite3
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from feedsvc.cli_support import make_store
from feedsvc.domain.events import SLUG_PATTERN, format_recorded_at
from feedsvc.errors import FeedsvcError, StoreUnavailable
from feedsvc.settings import Settings

TOKEN_PREFIX = "fsv_"
ADMIN_TOKEN_FILE = "admin.token"
BOOTSTRAP_NAME = "admin"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SLUG_RE = re.compile(SLUG_PATTERN)


class TokenError(FeedsvcError):
    """A token cannot be created, found or revoked as asked."""


@dataclass(frozen=True)
class Scope:
    """What a token may do: ``admin``, ``append:*`` or ``append:<slug>,...``."""

    admin: bool = False
    all_stories: bool = False
    stories: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse a scope; :class:`TokenError` says what a valid one looks like."""
        text = text.strip()
        if text == "admin":
            return cls(admin=True)
        if text == "append:*":
            return cls(all_stories=True)
        if text.startswith("append:"):
            slugs = [s.strip() for s in text[len("append:") :].split(",")]
            bad = [s for s in slugs if not _SLUG_RE.match(s)]
            if not bad:
                return cls(stories=frozenset(slugs))
            raise TokenError(
                f"scope {text!r}: {', '.join(repr(b) for b in bad)} is not a story slug "
                "(lowercase a-z, 0-9 and single hyphens)"
            )
        raise TokenError(
            f"scope {text!r} is not one of: admin, append:*, append:<slug>[,<slug>...]"
        )

    def __str__(self) -> str:
        if self.admin:
            return "admin"
        if self.all_stories:
            return "append:*"
        return "append:" + ",".join(sorted(self.stories))

    def may_append(self, slug: str) -> bool:
        """Whether the token may append to the story ``slug`` (if it exists)."""
        return self.admin or self.all_stories or slug in self.stories

    @property
    def may_open(self) -> bool:
        """Whether the token may open new stories."""
        return self.admin or self.all_stories


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never its secret, which is not kept."""

    name: str
    scope: Scope
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


def new_secret() -> str:
    """A fresh token: the prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The hex SHA-256 that the database keeps instead of the token."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    """Refuse a token name that would be awkward in lists and logs."""
    if not _NAME_RE.match(name):
        raise TokenError(
            f"token name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


class TokenStore(ABC):
    """Where tokens live: their names, scopes and hashes."""

    @abstractmethod
    async def open(self) -> None:
        """Connect; raise :class:`~feedsvc.errors.StoreUnavailable` if impossible."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection."""

    @abstractmethod
    async def create(self, name: str, scope: Scope, secret: str | None = None) -> str:
        """Store a new token and return its secret (the only time it is seen).

        A revoked token's name may be reused; an active one's may not.
        """

    @abstractmethod
    async def list(self) -> list[TokenInfo]:
        """Every token, revoked ones too, by name."""

    @abstractmethod
    async def revoke(self, name: str) -> TokenInfo:
        """Revoke the named token at once; :class:`TokenError` if there is none."""

    @abstractmethod
    async def authenticate(self, secret: str) -> TokenInfo | None:
        """The active token whose secret this is, or ``None``."""

    @abstractmethod
    async def count(self) -> int:
        """How many tokens were ever created (revoked ones included)."""


_Active = list[tuple[str, TokenInfo]]
"""(hash, token) of every active token."""


class SQLiteTokenStore(TokenStore):
    """Tokens in the ``tokens`` table of the SQLite events database."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000, cache_s: float = 1.0) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.cache_s = cache_s
        """How long the active tokens are kept in memory: a change made by this process
        takes effect at once, one made by another (``feedsvc token revoke``) within
        ``cache_s`` seconds."""
        self._conn: aiosqlite.Connection | None = None
        self._active: _Active | None = None
        """(hash, token) of every active token, as last read."""
        self._active_at = 0.0
        self._loading: asyncio.Future[_Active] | None = None
        """The read of the active tokens in flight: every request that finds the cache
        expired waits for this one read, rather than each making its own."""
        self._changes = 0
        self._loading_changes = 0

    async def open(self) -> None:
        try:
            conn = await aiosqlite.connect(
                f"file:{self.path}?mode=rw",
                uri=True,
                isolation_level=None,
                timeout=self.busy_timeout_ms / 1000,
            )
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot open token database {self.path}: {e}") from e
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            async with conn.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'tokens'"
            ) as cur:
                found = await cur.fetchone()
        except sqlite3.Error as e:
            await conn.close()
            raise StoreUnavailable(f"cannot read token database {self.path}: {e}") from e
        if found is None:
            await conn.close()
            raise StoreUnavailable(
                f"{self.path} has no tokens table: open it with the event store first "
                "(it migrates the schema)"
            )
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    def _db(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreUnavailable("the token store is closed")
        return self._conn

    async def create(self, name: str, scope: Scope, secret: str | None = None) -> str:
        check_name(name)
        secret = secret or new_secret()
        now = format_recorded_at(datetime.now(UTC))
        try:
            cursor = await self._db().execute(
                "INSERT INTO tokens (name, hash, scope, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, "
                "scope = excluded.scope, created_at = excluded.created_at, revoked_at = NULL "
                "WHERE tokens.revoked_at IS NOT NULL",
                (name, hash_secret(secret), str(scope), now),
            )
            self._changed()
        except sqlite3.IntegrityError as e:
            raise TokenError(f"cannot store token {name!r}: {e}") from e
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot write token database {self.path}: {e}") from e
        if cursor.rowcount != 1:
            raise TokenError(
                f"a token named {name!r} already exists; revoke it first or pick another name"
            )
        return secret

    async def _rows(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        try:
            async with self._db().execute(sql, params) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot read token database {self.path}: {e}") from e

    async def list(self) -> list[TokenInfo]:
        rows = await self._rows(
            "SELECT name, scope, created_at, revoked_at FROM tokens ORDER BY name"
        )
        return [TokenInfo(r[0], Scope.parse(r[1]), r[2], r[3]) for r in rows]

    async def revoke(self, name: str) -> TokenInfo:
        now = format_recorded_at(datetime.now(UTC))
        try:
            await self._db().execute(
                "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (now, name),
            )
            self._changed()
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot write token database {self.path}: {e}") from e
        rows = await self._rows(
            "SELECT name, scope, created_at, revoked_at FROM tokens WHERE name = ?", (name,)
        )
        if not rows:
            raise TokenError(f"no token named {name!r}; `feedsvc token list` shows them")
        r = rows[0]
        return TokenInfo(r[0], Scope.parse(r[1]), r[2], r[3])

    async def authenticate(self, secret: str) -> TokenInfo | None:
        digest = hash_secret(secret)
        found: TokenInfo | None = None
        for stored, token in await self._active_tokens():
            # every hash is compared, so the time taken does not tell which one matched
            if hmac.compare_digest(stored, digest):
                found = token
        return found

    async def _active_tokens(self) -> _Active:
        while True:
            now = time.monotonic()
            if self._active is not None and now - self._active_at <= self.cache_s:
                return self._active
            if self._loading is None:
                self._loading = asyncio.ensure_future(self._read_active())
                self._loading_changes = self._changes
            loading, changes = self._loading, self._loading_changes
            try:
                active = await asyncio.shield(loading)
            finally:
                if loading.done() and self._loading is loading:
                    self._loading = None
            if changes == self._changes:
                self._active, self._active_at = active, now
                return active
            # this process created or revoked a token during the read: read again

    def _changed(self) -> None:
        """This process created or revoked a token: it counts from now on."""
        self._active = None
        self._loading = None
        self._changes += 1

    async def _read_active(self) -> _Active:
        rows = await self._rows(
            "SELECT name, hash, scope, created_at FROM tokens WHERE revoked_at IS NULL"
        )
        return [
            (str(stored), TokenInfo(name, Scope.parse(scope), created_at))
            for name, stored, scope, created_at in rows
        ]

    async def count(self) -> int:
        rows = await self._rows("SELECT count(*) FROM tokens")
        return int(rows[0][0])


async def ensure_admin_token(tokens: TokenStore, data_dir: Path) -> Path | None:
    """On a first start (no token was ever created) make an ``admin`` token.

    Its secret goes to ``<data_dir>/admin.token`` (mode 0600): written to a private
    temporary file first, moved into place once the hash is stored, so two processes
    starting at once cannot leave a file whose token was never stored. Returns the
    file's path, or ``None`` when tokens already existed.
    """
    if await tokens.count() > 0:
        return None
    secret = new_secret()
    path = data_dir / ADMIN_TOKEN_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_private(tmp, secret + "\n")
    try:
        await tokens.create(BOOTSTRAP_NAME, Scope(admin=True), secret)
    except TokenError:
        # another process started at the same moment and made it first
        tmp.unlink(missing_ok=True)
        return None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def _write_private(path: Path, text: str) -> None:
    """Write a new file only its owner can read, durably."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second, bursts up to ``burst``.

    A rate of zero or less disables limiting.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, float(burst))
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, cost: float = 1.0) -> float:
        """Spend ``cost`` from ``key``'s bucket: 0 if allowed, else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        level, then = self._buckets.get(key, (self.burst, now))
        level = min(self.burst, level + (now - then) * self.rate)
        if level >= cost:
            self._buckets[key] = (level - cost, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (cost - level) / self.rate


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


# -- the `feedsvc token` command ----------------------------------------------------


def add_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``token create | list | revoke`` to the CLI."""
    p = sub.add_parser("token", help="create, list or revoke bearer tokens of the append API")
    actions = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="create a token and print it (shown only once)")
    c.add_argument("--name", required=True, help="a name for the token (appears as the actor)")
    c.add_argument(
        "--scope",
        required=True,
        help="admin | append:* | append:<slug>[,<slug>...]",
    )
    actions.add_parser("list", help="list tokens (names and scopes, never secrets)")
    r = actions.add_parser("revoke", help="revoke a token at once")
    r.add_argument("name", help="the token's name")


async def token_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``feedsvc token ...``: the secret goes to stdout, notes to stderr."""
    if settings.data_dir.parent.is_dir():
        settings.data_dir.mkdir(exist_ok=True)
    events = make_store(settings, create=True)
    await events.open()  # creates or migrates the database, tokens table included
    await events.close()
    tokens = SQLiteTokenStore(settings.database_path, busy_timeout_ms=settings.busy_timeout_ms)
    await tokens.open()
    try:
        if args.token_command == "create":
            secret = await tokens.create(args.name, Scope.parse(args.scope))
            print(secret, flush=True)
            print(
                f"token {args.name!r} ({Scope.parse(args.scope)}) created; "
                "store it now: it is not shown again",
                file=sys.stderr,
            )
        elif args.token_command == "list":
            rows = await tokens.list()
            if not rows:
                print("no tokens", file=sys.stderr)
            width = max([4, *(len(t.name) for t in rows)])
            if rows:
                print(f"{'NAME':<{width}}  {'SCOPE':<24}  {'CREATED':<27}  REVOKED")
            for t in rows:
                print(
                    f"{t.name:<{width}}  {t.scope!s:<24}  {t.created_at:<27}  {t.revoked_at or '-'}"
                )
        else:
            info = await tokens.revoke(args.name)
            print(f"token {info.name!r} revoked at {info.revoked_at}", file=sys.stderr)
    finally:
        await tokens.close()
    return 0
