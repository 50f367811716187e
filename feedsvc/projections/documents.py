"""A served document: its bytes, its compressed forms once asked for, and validators."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from email.utils import format_datetime

import brotli

from feedsvc.domain.events import parse_recorded_at

GZIP_LEVEL = 4
BROTLI_QUALITY = 4


@dataclass(slots=True)
class Document:
    """One response body with its validators; compressed once per encoding, when first
    served in it (``gzip`` and ``br`` are empty until then), and kept with the document.

    Compressing when rendering would cost a render of every document twice over, for
    encodings many documents are never asked for in (a rebuild renders thousands).
    """

    path: str
    content_type: str
    body: bytes
    gzip: bytes
    br: bytes
    etag: str
    last_modified: str

    @classmethod
    def make(cls, path: str, content_type: str, body: bytes, updated: str) -> Document:
        """Fingerprint ``body``. ``updated`` is a ``recorded_at`` string."""
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(
            path=path,
            content_type=content_type,
            body=body,
            gzip=b"",
            br=b"",
            etag=f'"{digest}"',
            last_modified=http_date(updated),
        )

    def encoded(self, encoding: str) -> bytes:
        """The body in ``encoding``: ``identity``, ``gzip`` or ``br`` (compressed now
        if it was not yet; the same body always compresses to the same bytes)."""
        if encoding == "br":
            if not self.br:
                self.br = brotli.compress(self.body, quality=BROTLI_QUALITY)
            return self.br
        if encoding == "gzip":
            if not self.gzip:
                # mtime=0: no time in the header
                self.gzip = gzip.compress(self.body, GZIP_LEVEL, mtime=0)
            return self.gzip
        return self.body

    @property
    def size(self) -> int:
        """Bytes held in memory for this document (its compressed forms counted as if
        made: they are, once asked for)."""
        return 2 * len(self.body)


def http_date(recorded_at: str) -> str:
    """An RFC 9110 HTTP-date from a ``recorded_at`` string."""
    if not recorded_at:
        recorded_at = "1970-01-01T00:00:00.000000Z"
    return format_datetime(parse_recorded_at(recorded_at), usegmt=True)
