"""The exceptions feedsvc raises, in one tree.

::

    FeedsvcError
    ├── ValidationFailed          bad input; carries one FieldProblem per bad field
    │   └── MalformedBody         the body is not JSON (or not UTF-8)
    ├── Refused                   a request the service will not carry out as sent
    │   ├── Unauthorized          no bearer token, a malformed one, or an unknown one
    │   ├── Forbidden             the token's scope does not cover the request
    │   ├── RateLimited           the token is over its rate; retry after some seconds
    │   ├── UnsupportedMediaType  the body is not application/json in UTF-8
    │   ├── TooLarge              the body or the number of events is over a limit
    │   ├── NotFound              no story, topic, feed or page at that path
    │   │   └── NoStory           appending to a story that was never opened
    │   └── StoryExists           opening a story that is already open
    ├── NotReady                  the service cannot serve reads reliably yet
    ├── StoreError                the log could not do what was asked
    │   ├── StoreUnavailable      the database cannot be opened or written now
    │   ├── NotAFeedsvcDatabase   the file is some other SQLite file (or none at all)
    │   ├── SchemaTooNew          the database was made by a newer feedsvc
    │   ├── AppendConflict        expected version or idempotency conflict
    │   │   ├── WrongExpectedVersion
    │   │   │   └── PreconditionFailed   the version named by If-Match is stale
    │   │   └── DuplicateEventId
    │   └── IntegrityError        the log breaks an invariant (found by ``check``)
    ├── ImportFailed              an NDJSON file cannot be imported; names the line
    └── ConfigError               the configuration cannot be loaded

Driver errors are translated once, at the store adapter (``raise X(...) from e``);
:mod:`feedsvc.web.problems` maps this tree to RFC 9457 answers, in one place. Every
refusal a handler makes is one of these exceptions: the handlers build no error
answers of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class FeedsvcError(Exception):
    """Base of every error feedsvc raises on purpose."""


ProblemPlace = Literal["pointer", "parameter", "header"]
"""Where a bad value is: a JSON pointer into the body, a query parameter, a header."""


@dataclass(frozen=True)
class FieldProblem:
    """One bad value: where it is and what is wrong with it.

    ``place`` says what ``pointer`` names: a JSON pointer into the request body
    (``"pointer"``, the default), the name of a query parameter (``"parameter"``) or
    of a header (``"header"``); the problem answer lists it under that member.
    """

    pointer: str
    message: str
    place: ProblemPlace = "pointer"

    def __str__(self) -> str:
        where = self.pointer or "/" if self.place == "pointer" else f"{self.place} {self.pointer}"
        return f"{where}: {self.message}"

    def moved(self, prefix: str) -> FieldProblem:
        """The same problem with ``prefix`` before its body pointer (others unchanged)."""
        if self.place != "pointer" or not prefix:
            return self
        return type(self)(prefix + self.pointer, self.message, self.place)


class StoryMissing(FieldProblem):
    """The rules' word that an event names a story that was never opened."""


class StoryAlreadyOpen(FieldProblem):
    """The rules' word that an event opens a story that is already open."""


class ValidationFailed(FeedsvcError):
    """Input was refused; ``problems`` names every bad field."""

    def __init__(self, problems: list[FieldProblem], what: str = "event") -> None:
        self.problems = problems
        self.what = what
        listing = "; ".join(str(p) for p in problems)
        super().__init__(f"invalid {what}: {listing}")

    def moved(self, prefix: str) -> ValidationFailed:
        """The same refusal with ``prefix`` before every body pointer."""
        if not prefix:
            return self
        return type(self)([p.moved(prefix) for p in self.problems], what=self.what)


class MalformedBody(ValidationFailed):
    """The request body is not JSON, or not UTF-8 (``problems`` says where)."""

    def __init__(self, problems: list[FieldProblem], what: str = "body") -> None:
        super().__init__(problems, what)


class Refused(FeedsvcError):
    """A request the service will not carry out as sent; ``detail`` says what to do."""


class Unauthorized(Refused):
    """No bearer token, a malformed ``Authorization`` header, or an unknown or revoked
    token. ``challenge_error`` is the RFC 6750 ``error`` of the challenge, if any."""

    def __init__(self, detail: str, challenge_error: str | None = None) -> None:
        self.challenge_error = challenge_error
        super().__init__(detail)


class Forbidden(Refused):
    """The token is valid but its scope does not cover the request."""


class RateLimited(Refused):
    """The token is over its rate; ``retry_after`` is in whole seconds."""

    def __init__(self, detail: str, retry_after: str) -> None:
        self.retry_after = retry_after
        super().__init__(detail)


class UnsupportedMediaType(Refused):
    """The body is not of the one media type accepted (``accepted``)."""

    def __init__(self, detail: str, accepted: str) -> None:
        self.accepted = accepted
        super().__init__(detail)


class TooLarge(Refused):
    """The body, or the number of events in it, is over a configured ``limit``
    (``limit_name`` is the setting)."""

    def __init__(self, detail: str, limit_name: str, limit: int) -> None:
        self.limit_name = limit_name
        self.limit = limit
        super().__init__(detail)


class NotFound(Refused):
    """Nothing at the path asked for."""


class NoStory(NotFound):
    """Appending to (or reading) a story that was never opened."""

    def __init__(self, stream: str, detail: str | None = None) -> None:
        self.stream = stream
        super().__init__(
            detail
            or f"there is no story {stream!r}; open it first with a story.opened event "
            f"whose data.slug is {stream!r}"
        )


class StoryExists(Refused):
    """Opening a story that is already open; ``current`` is its version (0 while the
    request that opened it has not committed)."""

    def __init__(self, stream: str, current: int = 0) -> None:
        self.stream = stream
        self.current = current
        super().__init__(
            f"story {stream!r} is already open (at version {current}); "
            "append its developments instead of opening it again"
        )


class NotReady(FeedsvcError):
    """The service cannot serve reliably yet: ``checks`` says which check fails."""

    def __init__(self, detail: str, checks: dict[str, str], **facts: int) -> None:
        self.checks = checks
        self.facts = facts
        super().__init__(detail)


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


class PreconditionFailed(WrongExpectedVersion):
    """The version the caller named in ``If-Match`` is not the stream's (RFC 9110
    section 13.1.1: answered 412, where a version in the body is answered 409)."""


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
