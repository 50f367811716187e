"""Typed application state: every shared resource of the aiohttp app, by key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from feedsvc.service import StoryService
from feedsvc.settings import Settings
from feedsvc.store.port import EventStore

if TYPE_CHECKING:
    from feedsvc.projections.runner import ProjectionRunner

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", EventStore)
SERVICE = web.AppKey("service", StoryService)
PROJECTIONS: web.AppKey[ProjectionRunner] = web.AppKey("projections")
