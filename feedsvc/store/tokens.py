"""The token store port: where the bearer tokens of the append API are kept.

Adapters (:mod:`feedsvc.store.sqlite_tokens`, ...) implement :class:`TokenStore`, each
creating and migrating the schema it owns; :func:`feedsvc.store.make_token_store`
picks the one of the configured database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from feedsvc.auth import Scope, TokenInfo


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
