"""Bearer tokens: scopes, hashed storage in the events database, the first admin token,
and the ``feedsvc token`` command (rate limits: tests/store/test_coordination.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from feedsvc.auth import (
    Scope,
    TokenError,
    retry_after,
)
from feedsvc.cli import main
from feedsvc.errors import StoreUnavailable
from feedsvc.store.sqlite import SQLiteEventStore
from feedsvc.store.sqlite_tokens import SQLiteTokenStore
from tests.store.token_contract import StoredTokens, TokenStoreContract


class TestSQLiteTokens(TokenStoreContract):
    """The token store contract, on a real SQLite file."""


@pytest.fixture
async def stored_tokens(tokens: SQLiteTokenStore) -> StoredTokens:
    """What the SQLite file holds, read with sqlite3."""

    async def read() -> tuple[list[tuple[str, str, str]], str]:
        with sqlite3.connect(tokens.path) as db:
            rows = db.execute("SELECT name, hash, scope FROM tokens").fetchall()
            return rows, "\n".join(db.iterdump())

    return read


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


async def test_a_database_feedsvc_did_not_make_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    sqlite3.connect(path).close()
    with pytest.raises(StoreUnavailable, match="not a feedsvc database"):
        await SQLiteTokenStore(path).open()


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"


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
