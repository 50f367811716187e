"""Bearer tokens: scopes, hashed storage in the events database, the first admin token,
and the ``feedsvc token`` command (rate limits: tests/store/test_coordination.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from feedsvc.auth import (
    ADMIN_TOKEN_FILE,
    Scope,
    TokenError,
    ensure_admin_token,
)
from feedsvc.cli import main
from feedsvc.errors import StoreUnavailable
from feedsvc.store.sqlite import SQLiteEventStore
from feedsvc.store.sqlite_tokens import SQLiteTokenStore


@pytest.fixture
async def tokens(tmp_path: Path) -> AsyncIterator[SQLiteTokenStore]:
    """A token store in a fresh events database."""
    path = tmp_path / "feedsvc.sqlite3"
    events = SQLiteEventStore(path)
    await events.open()  # migrates: the tokens table is migration 2
    await events.close()
    store = SQLiteTokenStore(path)
    await store.open()
    yield store
    await store.close()


def test_scopes() -> None:
    admin = Scope.parse("admin")
    assert admin.may_append("anything") and admin.may_open
    wire = Scope.parse("append:*")
    assert wire.may_append("anything") and wire.may_open
    desk = Scope.parse("append:story-b, story-a")
    assert desk.may_append("story-a") and desk.may_append("story-b")
    assert not desk.may_append("story-c")
    assert not desk.may_open
    assert str(desk) == "append:story-a,story-b"
    assert Scope.parse(str(desk)) == desk
    for bad in ("root", "append:", "append:Not_A_Slug", "read:*"):
        with pytest.raises(TokenError):
            Scope.parse(bad)


async def test_only_a_hash_of_each_token_is_kept(tokens: SQLiteTokenStore) -> None:
    secret = await tokens.create("ci", Scope.parse("append:*"))
    assert secret.startswith("fsv_") and len(secret) > 40
    with sqlite3.connect(tokens.path) as db:
        rows = db.execute("SELECT name, hash, scope FROM tokens").fetchall()
        dump = "\n".join(db.iterdump())
    assert rows == [("ci", hashlib.sha256(secret.encode()).hexdigest(), "append:*")]
    assert secret not in dump
    found = await tokens.authenticate(secret)
    assert found is not None and found.name == "ci" and found.scope.may_open
    assert await tokens.authenticate(secret + "x") is None
    assert await tokens.authenticate("") is None


async def test_revoked_tokens_stop_working_at_once(tokens: SQLiteTokenStore) -> None:
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


async def test_a_database_feedsvc_did_not_make_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    sqlite3.connect(path).close()
    with pytest.raises(StoreUnavailable, match="not a feedsvc database"):
        await SQLiteTokenStore(path).open()


async def test_the_first_start_writes_a_private_admin_token(
    tokens: SQLiteTokenStore, tmp_path: Path
) -> None:
    path = await ensure_admin_token(tokens, tmp_path)
    assert path == tmp_path / ADMIN_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    found = await tokens.authenticate(secret)
    assert found is not None and found.scope.admin
    assert await ensure_admin_token(tokens, tmp_path) is None  # only on a first start
    assert path.read_text().strip() == secret
    leftovers = await asyncio.to_thread(lambda: [p for p in tmp_path.iterdir() if p.name[0] == "."])
    assert leftovers == []  # no temporary file left behind


def test_the_token_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "feedsvc.toml"
    config.write_text(f'data_dir = {json.dumps(str(tmp_path / "data"))}\nseed = ""\n')
    base = ["--config", str(config), "token"]

    assert main([*base, "create", "--name", "wire", "--scope", "append:*"]) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith("fsv_") and "\n" not in secret  # only the token on stdout
    assert "not shown again" in err

    assert main([*base, "list"]) == 0
    out, _ = capsys.readouterr()
    assert "wire" in out and "append:*" in out
    assert secret not in out

    assert main([*base, "revoke", "wire"]) == 0
    capsys.readouterr()
    assert main([*base, "list"]) == 0
    out, _ = capsys.readouterr()
    [row] = [line for line in out.splitlines() if line.startswith("wire")]
    assert not row.rstrip().endswith("-")  # a revocation time instead of '-'

    assert main([*base, "create", "--name", "bad", "--scope", "everything"]) == 2
    _, err = capsys.readouterr()
    assert "admin, append:*, append:<slug>" in err
    assert main([*base, "revoke", "nobody"]) == 2


async def test_requests_that_find_the_cache_expired_share_one_read(
    tokens: SQLiteTokenStore,
) -> None:
    secret = await tokens.create("ci", Scope.parse("admin"))
    reads = 0
    read_active = tokens._read_active

    async def counted() -> Any:
        nonlocal reads
        reads += 1
        return await read_active()

    tokens._read_active = counted  # type: ignore[method-assign]
    found = await asyncio.gather(*(tokens.authenticate(secret) for _ in range(50)))
    assert all(token is not None and token.name == "ci" for token in found)
    assert reads == 1


async def test_a_revocation_during_a_read_of_the_tokens_counts_at_once(
    tokens: SQLiteTokenStore,
) -> None:
    secret = await tokens.create("ci", Scope.parse("admin"))
    started = asyncio.Event()
    read_active = tokens._read_active

    async def slow() -> Any:
        rows = await read_active()  # still lists the token
        started.set()
        await asyncio.sleep(0.05)
        return rows

    tokens._read_active = slow  # type: ignore[method-assign]
    checking = asyncio.ensure_future(tokens.authenticate(secret))
    await started.wait()
    await tokens.revoke("ci")
    assert await checking is None
    assert await tokens.authenticate(secret) is None
