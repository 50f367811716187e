"""Event store: the port and its adapters."""

from feedsvc.store.port import AppendResult, EventStore, Expected
from feedsvc.store.sqlite import SQLiteEventStore

__all__ = ["AppendResult", "EventStore", "Expected", "SQLiteEventStore"]
