"""Moving a log from SQLite to PostgreSQL with the real command line: ``feedsvc export``
from a SQLite data folder, ``feedsvc import`` into PostgreSQL and ``feedsvc export``
from there give the same bytes. Needs ``FEEDSVC_TEST_DATABASE_URL``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from feedsvc.store.sqlite import SQLiteEventStore
from tests.conftest import REPO, SEED, SEED_STREAM, opened, reported
from tests.store.contract import valid


def feedsvc(tmp_path: Path, *args: str, database_url: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``python -m feedsvc.cli`` as a user would, configured by the environment."""
    config = tmp_path / "feedsvc.toml"
    config.write_text('seed = ""\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env.update(
        FEEDSVC_DATA_DIR=str(tmp_path / "data"),
        FEEDSVC_DATABASE_URL=database_url,
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run(
        [sys.executable, "-m", "feedsvc.cli", "--config", str(config), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


async def test_a_log_moves_from_sqlite_to_postgresql_byte_for_byte(
    tmp_path: Path, pg_url: str
) -> None:
    imported = await asyncio.to_thread(feedsvc, tmp_path, "import", str(SEED))
    assert "imported" in imported.stdout
    store = SQLiteEventStore(tmp_path / "data" / "feedsvc.sqlite3")
    await store.open()
    try:
        version = await store.stream_version(SEED_STREAM)
        await store.append(
            SEED_STREAM,
            [valid(reported("new-york-decision", body="Ünïcode — “quotes” 🗞️ <b>x</b>"))],
            version,
        )
        await store.append("second-story", [valid(opened("second-story"))], "no_stream")
        head = await store.head()
    finally:
        await store.close()

    from_sqlite = tmp_path / "from-sqlite.ndjson"
    from_postgres = tmp_path / "from-postgres.ndjson"
    await asyncio.to_thread(feedsvc, tmp_path, "export", "-o", str(from_sqlite))
    moved = await asyncio.to_thread(
        feedsvc, tmp_path, "import", str(from_sqlite), database_url=pg_url
    )
    assert f"imported {head} of {head} events" in moved.stdout
    await asyncio.to_thread(
        feedsvc, tmp_path, "export", "-o", str(from_postgres), database_url=pg_url
    )
    assert from_postgres.read_bytes() == from_sqlite.read_bytes()
    assert len(from_sqlite.read_bytes().splitlines()) == head

    again = await asyncio.to_thread(
        feedsvc, tmp_path, "import", str(from_sqlite), database_url=pg_url
    )
    assert f"imported 0 of {head} events" in again.stdout
    checked = await asyncio.to_thread(feedsvc, tmp_path, "check", database_url=pg_url)
    assert checked.returncode == 0
