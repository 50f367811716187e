"""A property-based client (schemathesis) drives the running service from the OpenAPI
document it serves: whatever the document allows (and much it does not), the service
answers without a server error, with a status the document lists for the operation,
in a documented media type, with a body that matches the documented schema.

The service is a real ``feedsvc serve`` process on loopback with the seed story; the
long poll is capped at a fraction of a second so that generated ``wait`` values stay
short, and the live SSE tail (an endless answer) is left to ``test_sse.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from feedsvc.settings import Settings
from feedsvc.web.openapi import build_document
from tests.conftest import REPO, SEED

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A running ``feedsvc serve``: its base URL and its admin token."""
    folder = tmp_path_factory.mktemp("conformance")
    port = _free_port()
    stderr = folder / "stderr.log"
    child = subprocess.Popen(
        [sys.executable, "-m", "feedsvc.cli", "serve"],
        stdout=subprocess.PIPE,
        stderr=stderr.open("wb"),
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")},
            "FEEDSVC_HTTP_PORT": str(port),
            "FEEDSVC_DATA_DIR": str(folder / "data"),
            "FEEDSVC_SEED": str(SEED),
            "FEEDSVC_MAX_WAIT_S": "0.2",
            "FEEDSVC_TOKEN_RATE_PER_S": "1000",
            "FEEDSVC_TOKEN_BURST": "1000",
            "FEEDSVC_LOG_LEVEL": "WARNING",
        },
    )
    try:
        assert child.stdout is not None
        for raw in child.stdout:  # serve prints this line once it listens
            if b"serving" in raw:
                break
        else:
            child.wait()
            pytest.fail(f"feedsvc serve did not start:\n{stderr.read_text()}")
        token = (folder / "data" / "admin.token").read_text().strip()
        yield f"http://127.0.0.1:{port}", token
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    assert child.returncode == 0, stderr.read_text()


@pytest.fixture(scope="module")
def api_schema(live_service: tuple[str, str]) -> Any:
    """The document the service serves, as schemathesis reads it."""
    base, _ = live_service
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    return schema.exclude(path="/api/events/live")


@pytest.fixture(scope="module")
def admin_token(live_service: tuple[str, str]) -> str:
    """The service's admin token."""
    return live_service[1]


def _operations() -> list[str]:
    """Every operation of the document, as ``METHOD /path``, but the endless live tail."""
    document = build_document(Settings.load(None, environ={}))
    return sorted(
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post") and path != "/api/events/live"
    )


@pytest.mark.parametrize("operation", _operations())
def test_every_operation_keeps_to_its_document(
    operation: str, api_schema: Any, admin_token: str
) -> None:
    method, path = operation.split(" ", 1)
    headers = {"Authorization": f"Bearer {admin_token}"} if method == "POST" else {}

    @given(case=api_schema[path][method].as_strategy())
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def keeps_to_its_document(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    keeps_to_its_document()


def test_the_document_is_fetched_from_the_service(api_schema: Any) -> None:
    operations = {
        f"{op.method.upper()} {op.path}" for op in (r.ok() for r in api_schema.get_all_operations())
    }
    assert "POST /api/stories/{slug}/events" in operations
    assert "GET /feeds/stories/{slug}.{fmt}" in operations
    assert len(operations) >= 15
