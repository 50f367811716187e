"""A served document: its bytes, precomputed compressed forms, and validators."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from email.utils import format_datetime

import brotli

from feedsvc.domain.events import parse_recorded_at

GZIP_LEVEL = 4
BROTLI_QUALITY = 4


@dataclass(frozen=True, slots=True)
class Document:
    """One response body, ready to serve: nothing is rendered or compressed per request."""

    path: str
    content_type: str
    body: bytes
    gzip: bytes
    br: bytes
    etag: str
    last_modified: str

    @classmethod
    def make(cls, path: str, content_type: str, body: bytes, updated: str) -> Document:
        """Compress and fingerprint ``body``. ``updated`` is a ``recorded_at`` string."""
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(
            path=path,
            content_type=content_type,
            body=body,
            # mtime=0: the same body always compresses to the same bytes
            gzip=gzip.compress(body, GZIP_LEVEL, mtime=0),
            br=brotli.compress(body, quality=BROTLI_QUALITY),
            etag=f'"{digest}"',
            last_modified=http_date(updated),
        )

    def encoded(self, encoding: str) -> bytes:
        """The body in ``encoding``: ``identity``, ``gzip`` or ``br``."""
        if encoding == "br":
            return self.br
        return self.gzip if encoding == "gzip" else self.body

    @property
    def size(self) -> int:
        """Bytes held in memory for this document."""
        return len(self.body) + len(self.gzip) + len(self.br)


def http_date(recorded_at: str) -> str:
    """An RFC 9110 HTTP-date from a ``recorded_at`` string."""
    if not recorded_at:
        recorded_at = "1970-01-01T00:00:00.000000Z"
    return format_datetime(parse_recorded_at(recorded_at), usegmt=True)
