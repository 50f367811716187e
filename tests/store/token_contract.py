"""The token store contract: every adapter of :class:`~feedsvc.store.tokens.TokenStore`
must pass this against a real database.

Subclass :class:`TokenStoreContract` and provide the ``tokens`` fixture (an opened
token store in a fresh database) and ``stored_tokens`` (reads what the database
holds, bypassing the adapter: the (name, hash, scope) rows and a dump of the table).
"""

from __future__ import annotations

import asyncio
import hashlib
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from feedsvc.auth import ADMIN_TOKEN_FILE, Scope, TokenError, ensure_admin_token
from feedsvc.store.tokens import TokenStore

StoredTokens = Callable[[], Awaitable[tuple[list[tuple[str, str, str]], str]]]
"""Reads the tokens table directly: its (name, hash, scope) rows and all of it as text."""


class TokenStoreContract:
    """Behaviour every TokenStore adapter must show."""

    async def test_only_a_hash_of_each_token_is_kept(
        self, tokens: TokenStore, stored_tokens: StoredTokens
    ) -> None:
        secret = await tokens.create("ci", Scope.parse("append:*"))
        assert secret.startswith("fsv_") and len(secret) > 40
        rows, dump = await stored_tokens()
        assert rows == [("ci", hashlib.sha256(secret.encode()).hexdigest(), "append:*")]
        assert secret not in dump
        found = await tokens.authenticate(secret)
        assert found is not None and found.name == "ci" and found.scope.may_open
        assert await tokens.authenticate(secret + "x") is None
        assert await tokens.authenticate("") is None

    async def test_revoked_tokens_stop_working_at_once(self, tokens: TokenStore) -> None:
        secret = await tokens.create("ci", Scope.parse("admin"))
        with pytest.raises(TokenError, match="already exists"):
            await tokens.create("ci", Scope.parse("admin"))
        revoked = await tokens.revoke("ci")
        assert revoked.revoked_at is not None and not revoked.active
        assert await tokens.authenticate(secret) is None
        [listed] = await tokens.list()
        assert listed.name == "ci" and listed.revoked_at == revoked.revoked_at
        # a revoked name may be given to a new token; the old secret stays dead
        renewed = await tokens.create("ci", Scope.parse("append:one-story"))
        assert await tokens.authenticate(secret) is None
        assert (await tokens.authenticate(renewed)) is not None
        with pytest.raises(TokenError, match="no token named"):
            await tokens.revoke("nobody")
        with pytest.raises(TokenError, match="token name"):
            await tokens.create("has spaces", Scope.parse("admin"))

    async def test_the_first_start_writes_a_private_admin_token(
        self, tokens: TokenStore, tmp_path: Path
    ) -> None:
        path = await ensure_admin_token(tokens, tmp_path)
        assert path == tmp_path / ADMIN_TOKEN_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secret = path.read_text().strip()
        found = await tokens.authenticate(secret)
        assert found is not None and found.scope.admin
        assert await ensure_admin_token(tokens, tmp_path) is None  # only on a first start
        assert path.read_text().strip() == secret
        leftovers = await asyncio.to_thread(
            lambda: [p for p in tmp_path.iterdir() if p.name[0] == "."]
        )
        assert leftovers == []  # no temporary file left behind

    async def test_requests_that_find_the_cache_expired_share_one_read(
        self,
        tokens: TokenStore,
    ) -> None:
        secret = await tokens.create("ci", Scope.parse("admin"))
        reads = 0
        cached: Any = tokens  # both adapters read the active tokens with _read_active
        read_active = cached._read_active

        async def counted() -> Any:
            nonlocal reads
            reads += 1
            return await read_active()

        cached._read_active = counted
        found = await asyncio.gather(*(tokens.authenticate(secret) for _ in range(50)))
        assert all(token is not None and token.name == "ci" for token in found)
        assert reads == 1

    async def test_a_revocation_during_a_read_of_the_tokens_counts_at_once(
        self,
        tokens: TokenStore,
    ) -> None:
        secret = await tokens.create("ci", Scope.parse("admin"))
        started = asyncio.Event()
        cached: Any = tokens  # both adapters read the active tokens with _read_active
        read_active = cached._read_active

        async def slow() -> Any:
            rows = await read_active()  # still lists the token
            started.set()
            await asyncio.sleep(0.05)
            return rows

        cached._read_active = slow
        checking = asyncio.ensure_future(tokens.authenticate(secret))
        await started.wait()
        await tokens.revoke("ci")
        assert await checking is None
        assert await tokens.authenticate(secret) is None
