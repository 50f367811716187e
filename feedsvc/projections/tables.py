"""The read model's tables: every statement the projector runs on a generation.

The fold (:mod:`feedsvc.projections.fold`) decides what changes and the renderer
(:mod:`feedsvc.projections.render`) what a document shows; both read and write the
read model only through :class:`Tables`, so the schema (:mod:`readmodel`) and the SQL
written against it live side by side. Plain ``sqlite3`` on the projector's connection,
in the projections thread; the projector opens and closes the transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from feedsvc.projections.documents import Document
from feedsvc.projections.readmodel import PROJECTION_VERSIONS

_STATE = (
    "SELECT v.state FROM development_heads h JOIN development_versions v "
    "ON v.slug = h.slug AND v.development_id = h.development_id AND v.position = h.version "
    "WHERE h.slug = ? AND h.development_id = ?"
)
"""A development's current state."""

Membership = tuple[str, int, str, str]
"""A row of ``memberships``: (scope, ordinal, slug, development id)."""
Recent = tuple[str, int, str, str, int]
"""A row of ``recent_entries``: (scope, ordinal, slug, development id, touched)."""
Version = tuple[str, str, int, str]
"""A row of ``development_versions``: (slug, development id, position, state)."""
Head = tuple[str, str, str, int, int]
"""A row of ``development_heads``: (slug, development id, occurred start, reported
position, version)."""
StoryRow = tuple[str, str, str | None, int]
"""A row of ``stories``: (slug, header, latest development id, last position)."""
ScopeRow = tuple[str, str, int]
"""A scope's (label, updated_at, entry count)."""
ArchiveEntry = tuple[str, int, int, str, str, int, str, str]
"""A row of ``archive_entries``: (scope, page, slot, slug, development id, its version,
story title, story topics as JSON)."""


class Tables:
    """Reads and writes of one read model generation, on its connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: committed if the block ends, else rolled back."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # -- positions and pending work ------------------------------------------------

    def position(self) -> int:
        """The position every projection has applied (0 for a new read model)."""
        row = self.conn.execute("SELECT MIN(position) FROM projections").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def set_position(self, position: int) -> None:
        """Record ``position`` as applied by every projection, at this code's versions."""
        self.conn.executemany(
            "INSERT INTO projections (name, version, position) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET version = excluded.version, "
            "position = excluded.position",
            [(name, version, position) for name, version in PROJECTION_VERSIONS.items()],
        )

    def add_pending(self, items: Iterable[str]) -> None:
        """Record render items to render later."""
        self.conn.executemany(
            "INSERT OR IGNORE INTO pending_renders (item) VALUES (?)",
            [(item,) for item in sorted(items)],
        )

    def remove_pending(self, items: Iterable[str]) -> None:
        """Forget render items (rendered)."""
        self.conn.executemany(
            "DELETE FROM pending_renders WHERE item = ?", [(item,) for item in sorted(items)]
        )

    def pending_items(self) -> set[str]:
        """Render items recorded and not rendered yet."""
        return {r[0] for r in self.conn.execute("SELECT item FROM pending_renders")}

    # -- stories, developments, follow-ups -----------------------------------------

    def story_header(self, slug: str) -> str | None:
        """A story's header (JSON), if it was ever opened."""
        row = self.conn.execute("SELECT header FROM stories WHERE slug = ?", (slug,)).fetchone()
        return str(row[0]) if row else None

    def development_state(self, slug: str, dev_id: str) -> str | None:
        """A development's current state (JSON), if it was written."""
        row = self.conn.execute(_STATE, (slug, dev_id)).fetchone()
        return str(row[0]) if row else None

    def version_state(self, slug: str, dev_id: str, version: int) -> str:
        """One kept version of a development (JSON)."""
        row = self.conn.execute(
            "SELECT state FROM development_versions "
            "WHERE slug = ? AND development_id = ? AND position = ?",
            (slug, dev_id, version),
        ).fetchone()
        assert row is not None, (slug, dev_id, version)
        return str(row[0])

    def last_version(self, slug: str, dev_id: str) -> int:
        """The position of the last version of a development written."""
        row = self.conn.execute(
            "SELECT MAX(position) FROM development_versions WHERE slug = ? AND development_id = ?",
            (slug, dev_id),
        ).fetchone()
        assert row is not None and row[0] is not None, (slug, dev_id)
        return int(row[0])

    def development_ids(self, slug: str) -> list[str]:
        """A story's written developments, in the order they were reported (those
        reported together by their ids)."""
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT development_id FROM development_heads WHERE slug = ? "
                "ORDER BY reported_position, development_id",
                (slug,),
            )
        ]

    def timeline(self, slug: str) -> list[tuple[str, int]]:
        """(development id, current version) of a story's developments in the order
        they happened: by when, then by when reported, then (reported together) by id,
        as :meth:`~feedsvc.domain.story.Story.timeline` orders them."""
        return [
            (str(dev_id), int(version))
            for dev_id, version in self.conn.execute(
                "SELECT development_id, version FROM development_heads WHERE slug = ? "
                "ORDER BY occurred_start, reported_position, development_id",
                (slug,),
            )
        ]

    def latest_development(self, slug: str) -> str | None:
        """The story's development that happened last (by when it happened, then by
        when it was reported)."""
        row = self.conn.execute(
            "SELECT development_id FROM development_heads WHERE slug = ? "
            "ORDER BY occurred_start DESC, reported_position DESC LIMIT 1",
            (slug,),
        ).fetchone()
        return str(row[0]) if row else None

    def followup_state(self, slug: str, followup_id: str) -> str | None:
        """A follow-up's state (JSON), if it was written."""
        row = self.conn.execute(
            "SELECT state FROM followups WHERE slug = ? AND followup_id = ?",
            (slug, followup_id),
        ).fetchone()
        return str(row[0]) if row else None

    def followups(self, slug: str) -> list[tuple[str, str]]:
        """A story's follow-ups (id, state JSON) in the order they were expected."""
        return [
            (str(followup_id), str(state))
            for followup_id, state in self.conn.execute(
                "SELECT followup_id, state FROM followups WHERE slug = ? ORDER BY position",
                (slug,),
            )
        ]

    def keep_version(self, row: Version) -> None:
        """Write one version of a development (if it is not written yet)."""
        self.keep_versions([row])

    def keep_versions(self, rows: Sequence[Version]) -> None:
        """Write versions of developments (those not written yet)."""
        self.conn.executemany(
            "INSERT OR IGNORE INTO development_versions (slug, development_id, position, state) "
            "VALUES (?, ?, ?, ?)",
            rows,
        )

    def put_heads(self, rows: Sequence[Head]) -> None:
        """Write developments' heads (their current version)."""
        self.conn.executemany(
            "INSERT INTO development_heads (slug, development_id, occurred_start, "
            "reported_position, version) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (slug, development_id) DO UPDATE SET "
            "occurred_start = excluded.occurred_start, version = excluded.version",
            rows,
        )

    def put_stories(self, rows: Sequence[StoryRow]) -> None:
        """Write story headers."""
        self.conn.executemany(
            "INSERT INTO stories (slug, header, latest, last_position) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (slug) DO UPDATE SET header = excluded.header, "
            "latest = excluded.latest, last_position = excluded.last_position",
            rows,
        )

    def put_followups(
        self, new: Sequence[tuple[str, str, int, str]], changed: Sequence[tuple[str, str, str]]
    ) -> None:
        """Insert new follow-ups (slug, id, position, state) and update the state of
        others (state, slug, id)."""
        self.conn.executemany(
            "INSERT INTO followups (slug, followup_id, position, state) VALUES (?, ?, ?, ?)", new
        )
        self.conn.executemany(
            "UPDATE followups SET state = ? WHERE slug = ? AND followup_id = ?", changed
        )

    # -- scopes and their entries --------------------------------------------------

    def scope_row(self, scope: str) -> ScopeRow | None:
        """A scope's (label, updated_at, entry count), if it has a row."""
        row = self.conn.execute(
            "SELECT label, updated_at, entries FROM scopes WHERE scope = ?", (scope,)
        ).fetchone()
        return (str(row[0]), str(row[1]), int(row[2])) if row else None

    def put_scopes(self, rows: Sequence[tuple[str, str, str, int]]) -> None:
        """Write scope rows (scope, label, updated_at, entries)."""
        self.conn.executemany(
            "INSERT INTO scopes (scope, label, updated_at, entries) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (scope) DO UPDATE SET label = excluded.label, "
            "updated_at = excluded.updated_at, entries = excluded.entries",
            rows,
        )

    def scope_labels(self, prefix: str) -> list[tuple[str, str]]:
        """(scope, label) of the scopes whose name starts with ``prefix``."""
        return [
            (str(scope), str(label))
            for scope, label in self.conn.execute(
                "SELECT scope, label FROM scopes WHERE scope LIKE ?", (prefix + "%",)
            )
        ]

    def insert_memberships(self, rows: Sequence[Membership]) -> None:
        """Insert scope memberships (in key order)."""
        self.conn.executemany(
            "INSERT INTO memberships (scope, ordinal, slug, development_id) VALUES (?, ?, ?, ?)",
            rows,
        )

    def memberships_of(self, slug: str, dev_id: str) -> list[tuple[str, int]]:
        """The scopes a development is in, each with its ordinal there."""
        return [
            (str(r[0]), int(r[1]))
            for r in self.conn.execute(
                "SELECT scope, ordinal FROM memberships WHERE slug = ? AND development_id = ?",
                (slug, dev_id),
            )
        ]

    def memberships_in(self, slug: str, scopes: Sequence[str]) -> list[tuple[str, str, int]]:
        """(development id, scope, ordinal) of a story's memberships in ``scopes``."""
        marks = ", ".join("?" * len(scopes))
        return [
            (str(dev_id), str(scope), int(ordinal))
            for dev_id, scope, ordinal in self.conn.execute(
                "SELECT development_id, scope, ordinal FROM memberships "
                f"WHERE slug = ? AND scope IN ({marks})",
                (slug, *scopes),
            )
        ]

    def scopes_showing(self, slug: str) -> set[str]:
        """Every scope one of the story's developments is in."""
        return {
            str(r[0])
            for r in self.conn.execute(
                "SELECT DISTINCT scope FROM memberships WHERE slug = ?", (slug,)
            )
        }

    def page_entries(self, scope: str, low: int, high: int) -> list[tuple[str, str]]:
        """(slug, development id) of a scope's ordinals ``low`` to ``high``, the last
        first."""
        return [
            (str(slug), str(dev_id))
            for slug, dev_id in self.conn.execute(
                "SELECT slug, development_id FROM memberships "
                "WHERE scope = ? AND ordinal BETWEEN ? AND ? ORDER BY ordinal DESC",
                (scope, low, high),
            )
        ]

    def put_recent(self, rows: Sequence[Recent], trim: Sequence[tuple[str, int]]) -> None:
        """Record touched memberships in ``recent_entries`` (a row keeps the later of
        its touched positions), then trim each scope of ``trim`` (scope, keep) to the
        rows ranked above its ``keep``-th most recently touched one."""
        self.conn.executemany(
            "INSERT INTO recent_entries (scope, ordinal, slug, development_id, touched) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, ordinal) DO UPDATE SET "
            "touched = max(touched, excluded.touched)",
            rows,
        )
        self.conn.executemany(
            "DELETE FROM recent_entries WHERE scope = ?1 AND (touched, ordinal) < ("
            "SELECT touched, ordinal FROM recent_entries WHERE scope = ?1 "
            "ORDER BY touched DESC, ordinal DESC LIMIT 1 OFFSET ?2)",
            trim,
        )

    def top_entries(self, scope: str, limit: int) -> list[tuple[str, str, int]]:
        """(slug, development id, current version) of the scope's ``limit`` entries
        touched most recently, the latest first."""
        return [
            (str(slug), str(dev_id), int(version))
            for slug, dev_id, version in self.conn.execute(
                "SELECT r.slug, r.development_id, h.version FROM recent_entries r "
                "JOIN development_heads h ON h.slug = r.slug "
                "AND h.development_id = r.development_id "
                "WHERE r.scope = ? ORDER BY r.touched DESC, r.ordinal DESC LIMIT ?",
                (scope, limit),
            )
        ]

    def latest_stories(self, limit: int) -> list[tuple[str, str | None]]:
        """(header JSON, latest development id) of the ``limit`` stories changed
        most recently, the latest first."""
        return [
            (str(header), latest)
            for header, latest in self.conn.execute(
                "SELECT header, latest FROM stories ORDER BY last_position DESC LIMIT ?",
                (limit,),
            )
        ]

    # -- archive pages -----------------------------------------------------------

    def record_archive(
        self, scope: str, page: int, meta: tuple[str, str, str], entries: Sequence[ArchiveEntry]
    ) -> None:
        """Record a filled archive page: its (title, subtitle, updated_at) and entries."""
        self.conn.executemany(
            "INSERT INTO archive_entries (scope, page, slot, slug, development_id, "
            "dev_position, story_title, story_topics) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            entries,
        )
        self.conn.execute(
            "INSERT INTO archive_pages (scope, page, title, subtitle, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (scope, page, *meta),
        )

    def pending_archives(self, limit: int) -> list[tuple[str, int]]:
        """Archive pages recorded and not rendered yet, in the order they filled."""
        return [
            (str(scope), int(page))
            for scope, page in self.conn.execute(
                "SELECT scope, page FROM archive_pages WHERE rendered = 0 ORDER BY rowid LIMIT ?",
                (limit,),
            )
        ]

    def archive_page(self, scope: str, page: int) -> tuple[str, str, str, bool] | None:
        """A recorded archive page's (title, subtitle, updated_at, rendered)."""
        row = self.conn.execute(
            "SELECT title, subtitle, updated_at, rendered FROM archive_pages "
            "WHERE scope = ? AND page = ?",
            (scope, page),
        ).fetchone()
        return (str(row[0]), str(row[1]), str(row[2]), bool(row[3])) if row else None

    def archive_entries(self, scope: str, page: int) -> list[tuple[str, str, int, str, str]]:
        """(slug, development id, version, story title, story topics JSON) of a
        recorded archive page's entries, in their order."""
        return [
            (str(slug), str(dev_id), int(version), str(title), str(topics))
            for slug, dev_id, version, title, topics in self.conn.execute(
                "SELECT slug, development_id, dev_position, story_title, story_topics "
                "FROM archive_entries WHERE scope = ? AND page = ? ORDER BY slot",
                (scope, page),
            )
        ]

    def archive_rendered(self, scope: str, page: int) -> None:
        """Mark a recorded archive page rendered."""
        self.conn.execute(
            "UPDATE archive_pages SET rendered = 1 WHERE scope = ? AND page = ?", (scope, page)
        )

    # -- documents -----------------------------------------------------------------

    def put_documents(self, docs: Sequence[Document]) -> None:
        """Write documents (replacing those at the same paths)."""
        self.conn.executemany(
            "INSERT INTO documents (path, content_type, body, gzip, br, etag, last_modified) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
            "content_type = excluded.content_type, body = excluded.body, "
            "gzip = excluded.gzip, br = excluded.br, etag = excluded.etag, "
            "last_modified = excluded.last_modified",
            [(d.path, d.content_type, d.body, d.gzip, d.br, d.etag, d.last_modified) for d in docs],
        )
