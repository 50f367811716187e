"""feedsvc: an event-sourced news feed service.

The developments of a story are events in an append-only log; projections fold them
into feeds (Atom, RSS, JSON Feed) and pages served over HTTP.
"""

from feedsvc.domain.events import Occurred, Precision, RecordedEvent, ValidEvent
from feedsvc.errors import FeedsvcError, ValidationFailed
from feedsvc.service import StoryService
from feedsvc.settings import Settings
from feedsvc.store import AppendResult, EventStore, make_store

__all__ = [
    "AppendResult",
    "EventStore",
    "FeedsvcError",
    "Occurred",
    "Precision",
    "RecordedEvent",
    "Settings",
    "StoryService",
    "ValidEvent",
    "ValidationFailed",
    "make_store",
]
__version__ = "0.1.0"
