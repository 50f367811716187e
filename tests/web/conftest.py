"""The real service over HTTP: ``create_app`` on a fresh SQLite file in tmp_path with
the seed story imported, driven only through its routes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from feedsvc.auth import ADMIN_TOKEN_FILE, Scope
from feedsvc.settings import Settings
from feedsvc.web.app import create_app
from feedsvc.web.keys import TOKENS
from tests.conftest import SEED, SEED_STREAM

SEED_HEAD = 23
"""Events in the seed log (all in SEED_STREAM)."""

Client = TestClient[web.Request, web.Application]


@dataclass
class Service:
    """A running service, its settings and its first admin token."""

    client: Client
    settings: Settings
    admin: str

    @property
    def app(self) -> web.Application:
        """The running application."""
        return self.client.app

    async def token(self, name: str, scope: str) -> str:
        """A new token (made the way ``feedsvc token create`` makes one)."""
        return await self.app[TOKENS].create(name, Scope.parse(scope))

    def auth(self, token: str | None = None) -> dict[str, str]:
        """The Authorization header of ``token`` (the admin token by default)."""
        return {"Authorization": f"Bearer {token or self.admin}"}

    async def append(
        self,
        slug: str,
        body: Any,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> ClientResponse:
        """POST ``body`` as JSON to the story's events."""
        return await self.client.post(
            f"/api/stories/{slug}/events",
            json=body,
            headers={**self.auth(token), **(headers or {})},
        )

    async def head(self) -> int:
        """The log's head, as a follower sees it."""
        response = await self.client.get("/api/events", params={"after": 0, "limit": 1})
        assert response.status == 200
        body = await response.json()
        return int(body["head"])

    async def stream_events(self, slug: str, from_version: int = 1) -> list[dict[str, Any]]:
        """One story's events, as a reader gets them."""
        response = await self.client.get(
            f"/api/stories/{slug}/events", params={"from_version": from_version}
        )
        assert response.status == 200, await response.text()
        events: list[dict[str, Any]] = (await response.json())["events"]
        return events


Start = Callable[..., Awaitable[Service]]
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


@pytest.fixture
def web_settings(tmp_path: Path) -> Settings:
    """Settings of a service whose data folder is tmp_path, seeded, rate limits high."""
    return Settings.load(
        None,
        environ={},
        data_dir=tmp_path,
        seed=SEED,
        public_base_url="http://127.0.0.1:8080",
        synchronous="NORMAL",
        token_burst=1_000_000,
        token_rate_per_s=1_000_000.0,
    )


@pytest.fixture
async def start(aiohttp_client: AiohttpClient, web_settings: Settings) -> Start:
    """Start the service with some settings changed (and cleanup contexts added)."""

    async def start(*contexts: CleanupContext, **changes: Any) -> Service:
        settings = web_settings.replace(**changes)
        app = create_app(settings)
        app.cleanup_ctx.extend(contexts)
        client = await aiohttp_client(app)
        admin = (settings.data_dir / ADMIN_TOKEN_FILE).read_text().strip()
        return Service(client, settings, admin)

    return start


@pytest.fixture
async def svc(start: Start) -> Service:
    """The service with the test settings."""
    return await start()


def new_id() -> str:
    """A fresh client-side event id."""
    return str(uuid.uuid4())


__all__ = ["SEED", "SEED_HEAD", "SEED_STREAM", "CleanupContext", "Service", "Start", "new_id"]
