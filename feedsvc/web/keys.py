"""Typed application state: every shared resource of the aiohttp app, by key."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from feedsvc.service import StoryService
from feedsvc.settings import Settings
from feedsvc.store import Coordinator, EventStore, TokenStore

if TYPE_CHECKING:
    from feedsvc.projections.runner import ProjectionRunner
    from feedsvc.web.ops import Metrics
    from feedsvc.web.readahead import ReadAhead

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", EventStore)
SERVICE = web.AppKey("service", StoryService)
PROJECTIONS: web.AppKey[ProjectionRunner] = web.AppKey("projections")
TOKENS = web.AppKey("tokens", TokenStore)
COORDINATOR = web.AppKey("coordinator", Coordinator)
"""What this replica shares with the others: rate limits, leadership, rebuilds."""
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
READ_AHEAD: web.AppKey[ReadAhead] = web.AppKey("read_ahead")
STOPPING = web.AppKey("stopping", asyncio.Event)
"""Set when the server begins to shut down: long polls and live streams end."""
