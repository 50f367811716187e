"""The token store port: where the bearer tokens of the append API are kept.

Adapters (:mod:`feedsvc.store.sqlite_tokens`, ...) implement :class:`TokenStore`, each
creating and migrating the schema it owns; :func:`feedsvc.store.make_token_store`
picks the one of the configured database.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from abc import ABC, abstractmethod

from feedsvc.auth import Scope, TokenInfo, hash_secret


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


Active = list[tuple[str, TokenInfo]]
"""(hash, token) of every active token."""


class CachedTokenStore(TokenStore):
    """A token store that keeps the active tokens in memory for ``cache_s`` seconds:
    authenticating a request costs no database read. A change made by this process
    takes effect at once, one made by another (``feedsvc token revoke``) within
    ``cache_s`` seconds. Adapters read the active tokens (:meth:`_read_active`) and
    call :meth:`_changed` after they create or revoke one."""

    def __init__(self, cache_s: float = 1.0) -> None:
        self.cache_s = cache_s
        self._active: Active | None = None
        """(hash, token) of every active token, as last read."""
        self._active_at = 0.0
        self._loading: asyncio.Future[Active] | None = None
        """The read of the active tokens in flight: every request that finds the cache
        expired waits for this one read, rather than each making its own."""
        self._changes = 0
        self._loading_changes = 0

    @abstractmethod
    async def _read_active(self) -> Active:
        """Read every active token from the database."""

    async def authenticate(self, secret: str) -> TokenInfo | None:
        digest = hash_secret(secret)
        found: TokenInfo | None = None
        for stored, token in await self._active_tokens():
            # every hash is compared, so the time taken does not tell which one matched
            if hmac.compare_digest(stored, digest):
                found = token
        return found

    async def _active_tokens(self) -> Active:
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
