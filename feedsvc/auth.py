"""Bearer tokens of the append API: scopes, hashed storage, ``Retry-After`` values.

A token is ``fsv_`` followed by 43 URL-safe characters (256 random bits). It is shown
once, when it is created; the database keeps only its SHA-256, so a copy of the
database lets nobody append. Presented tokens are hashed and compared with every
active hash in constant time (:func:`hmac.compare_digest`).

Scopes:

``admin``
    everything.
``append:*``
    append to every story and open new ones.
``append:<slug>[,<slug>...]``
    append to the named stories only; opening a new story is refused.

Where tokens are kept is a port of the store (:mod:`feedsvc.store.tokens`), with an
adapter per database beside the event store's. A token's rate limit is a bucket of
the coordination port (:mod:`feedsvc.store.coordination`), shared by every replica.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from feedsvc.domain.events import SLUG_PATTERN
from feedsvc.errors import FeedsvcError

if TYPE_CHECKING:
    from feedsvc.store.tokens import TokenStore

TOKEN_PREFIX = "fsv_"
ADMIN_TOKEN_FILE = "admin.token"
BOOTSTRAP_NAME = "admin"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SLUG_RE = re.compile(SLUG_PATTERN)


class TokenError(FeedsvcError):
    """A token cannot be created, found or revoked as asked."""


@dataclass(frozen=True)
class Scope:
    """What a token may do: ``admin``, ``append:*`` or ``append:<slug>,...``."""

    admin: bool = False
    all_stories: bool = False
    stories: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse a scope; :class:`TokenError` says what a valid one looks like."""
        text = text.strip()
        if text == "admin":
            return cls(admin=True)
        if text == "append:*":
            return cls(all_stories=True)
        if text.startswith("append:"):
            slugs = [s.strip() for s in text[len("append:") :].split(",")]
            bad = [s for s in slugs if not _SLUG_RE.match(s)]
            if not bad:
                return cls(stories=frozenset(slugs))
            raise TokenError(
                f"scope {text!r}: {', '.join(repr(b) for b in bad)} is not a story slug "
                "(lowercase a-z, 0-9 and single hyphens)"
            )
        raise TokenError(
            f"scope {text!r} is not one of: admin, append:*, append:<slug>[,<slug>...]"
        )

    def __str__(self) -> str:
        if self.admin:
            return "admin"
        if self.all_stories:
            return "append:*"
        return "append:" + ",".join(sorted(self.stories))

    def may_append(self, slug: str) -> bool:
        """Whether the token may append to the story ``slug`` (if it exists)."""
        return self.admin or self.all_stories or slug in self.stories

    @property
    def may_open(self) -> bool:
        """Whether the token may open new stories."""
        return self.admin or self.all_stories


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never its secret, which is not kept."""

    name: str
    scope: Scope
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


def new_secret() -> str:
    """A fresh token: the prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The hex SHA-256 that the database keeps instead of the token."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    """Refuse a token name that would be awkward in lists and logs."""
    if not _NAME_RE.match(name):
        raise TokenError(
            f"token name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


async def ensure_admin_token(tokens: TokenStore, data_dir: Path) -> Path | None:
    """On a first start (no token was ever created) make an ``admin`` token.

    Its secret goes to ``<data_dir>/admin.token`` (mode 0600): written to a private
    temporary file first, moved into place once the hash is stored, so two processes
    starting at once cannot leave a file whose token was never stored. Returns the
    file's path, or ``None`` when tokens already existed.
    """
    if await tokens.count() > 0:
        return None
    secret = new_secret()
    path = data_dir / ADMIN_TOKEN_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_private(tmp, secret + "\n")
    try:
        await tokens.create(BOOTSTRAP_NAME, Scope(admin=True), secret)
    except TokenError:
        # another process started at the same moment and made it first
        tmp.unlink(missing_ok=True)
        return None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def _write_private(path: Path, text: str) -> None:
    """Write a new file only its owner can read, durably."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
