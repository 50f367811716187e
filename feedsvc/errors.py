"""The exceptions feedsvc raises, in one tree.

::

    FeedsvcError
    ├── ValidationFailed          bad input; carries one Problem per bad field
    ├── StoreError                the log could not do what was asked
    │   ├── StoreUnavailable      the database cannot be opened or written now
    │   ├── NotAFeedsvcDatabase   the file is some other SQLite file (or none at all)
    │   ├── SchemaTooNew          the database was made by a newer feedsvc
    │   ├── AppendConflict        expected version or idempotency conflict
    │   │   ├── WrongExpectedVersion
    │   │   └── DuplicateEventId
    │   └── IntegrityError        the log breaks an invariant (found by ``check``)
    ├── ImportFailed              an NDJSON file cannot be imported; names the line
    └── ConfigError               the configuration cannot be loaded

Driver errors are translated once, at the store adapter (``raise X(...) from e``);
the web layer maps this tree to HTTP status codes in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


class FeedsvcError(Exception):
    """Base of every error feedsvc raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One bad field: where it is (a JSON pointer) and what is wrong with it.

    ``code`` marks the problems a caller may answer differently: ``no-story`` (the
    story does not exist) and ``story-exists`` (opening a story that is open).
    """

    pointer: str
    message: str
    code: str | None = None

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


class ValidationFailed(FeedsvcError):
    """Input was refused; ``problems`` names every bad field."""

    def __init__(self, problems: list[FieldProblem], what: str = "event") -> None:
        self.problems = problems
        self.what = what
        listing = "; ".join(str(p) for p in problems)
        super().__init__(f"invalid {what}: {listing}")


class ConfigError(FeedsvcError):
    """The configuration file or environment holds a bad value."""


class StoreError(FeedsvcError):
    """The event store could not do what was asked."""


class StoreUnavailable(StoreError):
    """The database cannot be opened or written at the moment (missing folder,
    permissions, locked past the timeout, disk full)."""


class NotAFeedsvcDatabase(StoreError):
    """The file exists but was not made by feedsvc."""


class SchemaTooNew(StoreError):
    """The database was written by a newer feedsvc; this one refuses to touch it."""


class AppendConflict(StoreError):
    """An append was refused because of what the log already holds."""


class WrongExpectedVersion(AppendConflict):
    """The stream is not at the version the caller expected."""

    def __init__(self, stream: str, expected: object, current: int) -> None:
        self.stream = stream
        self.expected = expected
        self.current = current
        super().__init__(f"stream {stream!r} is at version {current}, expected {expected}")


class DuplicateEventId(AppendConflict):
    """An event id is already in the log with other content."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(f"event id {event_id} is already in the log with different content")


class IntegrityError(StoreError):
    """The log breaks one of its invariants."""


class ImportFailed(FeedsvcError):
    """An import file was refused; nothing from it was written."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")
