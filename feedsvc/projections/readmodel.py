"""The read model: one SQLite file holding every projection's tables.

A read model file is one *generation*. A full rebuild writes a new generation while
the current one keeps serving, then the runner swaps them. The projections in it
(``stories``, ``timelines``, ``documents``) are updated together, in the same
transaction as the position each has applied, so after a crash they resume exactly
where their last commit left them.

Plain ``sqlite3`` (not aiosqlite): the projector runs whole batches in a worker thread,
and serving reads one row by primary key, cheaper inline than a thread hop.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from feedsvc.projections.documents import Document

PROJECTION_VERSIONS: dict[str, int] = {"stories": 3, "timelines": 4, "documents": 5}
"""Bump a version when its projection's output changes: it is rebuilt on start."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS projections (
    name     TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    position INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS stories (
    slug          TEXT PRIMARY KEY,
    header        TEXT NOT NULL,
    latest        TEXT,
    last_position INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS stories_last_position ON stories (last_position);
CREATE TABLE IF NOT EXISTS followups (
    slug        TEXT NOT NULL,
    followup_id TEXT NOT NULL,
    position    INTEGER NOT NULL,  -- of the event that expected it: the story page's order
    state       TEXT NOT NULL,
    PRIMARY KEY (slug, followup_id)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS development_heads (
    slug              TEXT NOT NULL,
    development_id    TEXT NOT NULL,
    occurred_start    TEXT NOT NULL,
    reported_position INTEGER NOT NULL,
    version           INTEGER NOT NULL,  -- its current state in development_versions
    PRIMARY KEY (slug, development_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS development_heads_latest
    ON development_heads (slug, occurred_start, reported_position);
CREATE TABLE IF NOT EXISTS scopes (
    scope      TEXT PRIMARY KEY,
    label      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    entries    INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS memberships (
    scope          TEXT NOT NULL,
    ordinal        INTEGER NOT NULL,
    slug           TEXT NOT NULL,
    development_id TEXT NOT NULL,
    PRIMARY KEY (scope, ordinal)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memberships_development ON memberships (slug, development_id);
-- each scope's memberships touched most recently (at least the feed's size of them,
-- at most about twice that): what its subscription document lists
CREATE TABLE IF NOT EXISTS recent_entries (
    scope          TEXT NOT NULL,
    ordinal        INTEGER NOT NULL,
    slug           TEXT NOT NULL,
    development_id TEXT NOT NULL,
    touched        INTEGER NOT NULL,
    PRIMARY KEY (scope, ordinal)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recent_entries_touched ON recent_entries (scope, touched, ordinal);
CREATE TABLE IF NOT EXISTS development_versions (
    slug           TEXT NOT NULL,
    development_id TEXT NOT NULL,
    position       INTEGER NOT NULL,
    state          TEXT NOT NULL,
    PRIMARY KEY (slug, development_id, position)
) STRICT;
CREATE TABLE IF NOT EXISTS archive_pages (
    scope      TEXT NOT NULL,
    page       INTEGER NOT NULL,
    title      TEXT NOT NULL,
    subtitle   TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    rendered   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, page)
) STRICT;
CREATE INDEX IF NOT EXISTS archive_pages_pending ON archive_pages (rendered);
CREATE TABLE IF NOT EXISTS archive_entries (
    scope          TEXT NOT NULL,
    page           INTEGER NOT NULL,
    slot           INTEGER NOT NULL,
    slug           TEXT NOT NULL,
    development_id TEXT NOT NULL,
    dev_position   INTEGER NOT NULL,
    story_title    TEXT NOT NULL,
    story_topics   TEXT NOT NULL,
    PRIMARY KEY (scope, page, slot)
) STRICT;
CREATE TABLE IF NOT EXISTS pending_renders (
    item TEXT PRIMARY KEY
) STRICT;
CREATE TABLE IF NOT EXISTS documents (
    path          TEXT PRIMARY KEY,
    content_type  TEXT NOT NULL,
    body          BLOB NOT NULL,
    gzip          BLOB NOT NULL,
    br            BLOB NOT NULL,
    etag          TEXT NOT NULL,
    last_modified TEXT NOT NULL
) STRICT;
"""


def connect(path: Path | str, *, building: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) a read model file and its schema.

    The read model is derived data: it can always be rebuilt from the log, so it is
    written with ``synchronous=NORMAL`` (durable on commit in WAL except on power
    loss, where a rebuild or a catch-up from the recorded position repairs it).

    ``building``: a generation a rebuild is writing, which nothing serves yet and which
    is deleted if the rebuild does not finish (on start too): its rollback journal is
    kept in memory and nothing is synced, until :func:`finish_building`.
    """
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    if building:
        conn.execute("PRAGMA journal_mode = MEMORY")
        conn.execute("PRAGMA synchronous = OFF")
    elif str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.executescript(SCHEMA)
    return conn


def finish_building(conn: sqlite3.Connection, path: Path) -> None:
    """Make a generation built with ``connect(building=True)`` durable and servable:
    its pages synced to disk, then WAL and ``synchronous=NORMAL`` as every other."""
    with open(path, "rb+") as file:
        os.fsync(file.fileno())
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")


class ReadModel:
    """Serving-side access to one read model generation."""

    def __init__(self, path: Path | str, conn: sqlite3.Connection | None = None) -> None:
        self.path = path
        self._conn = conn or connect(path)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def document(self, path: str) -> Document | None:
        """The document served at ``path``, if any."""
        with self._lock:
            row = self._conn.execute(
                "SELECT path, content_type, body, gzip, br, etag, last_modified "
                "FROM documents WHERE path = ?",
                (path,),
            ).fetchone()
        return Document(*row) if row else None

    def positions(self) -> dict[str, tuple[int, int]]:
        """name → (version, position) of every projection in this generation."""
        with self._lock:
            rows = self._conn.execute("SELECT name, version, position FROM projections")
            return {name: (version, position) for name, version, position in rows}

    def position(self) -> int:
        """The position every projection here has applied (the smallest)."""
        found = self.positions()
        return min((p for _, p in found.values()), default=0)

    def current(self) -> bool:
        """Whether every projection here has the version this code builds."""
        found = self.positions()
        return all(found.get(name, (None, 0))[0] == v for name, v in PROJECTION_VERSIONS.items())

    def scope_labels(self, prefix: str) -> dict[str, str]:
        """scope key → label for scopes whose name starts with ``prefix``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT scope, label FROM scopes WHERE scope LIKE ? ORDER BY scope",
                (prefix + "%",),
            ).fetchall()
        return {scope[len(prefix) :]: label for scope, label in rows}
