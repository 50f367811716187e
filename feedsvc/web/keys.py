"""Typed application state: every shared resource of the aiohttp app, by key."""

from __future__ import annotations

from aiohttp import web

from feedsvc.service import StoryService
from feedsvc.settings import Settings
from feedsvc.store.port import EventStore

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", EventStore)
SERVICE = web.AppKey("service", StoryService)
