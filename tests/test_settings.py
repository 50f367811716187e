"""Settings as an operator gives them: a config file, FEEDSVC_* variables, and the
base URL every link is built from, which follows the listening address unless set."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import aiohttp
import pytest

from feedsvc.errors import ConfigError
from feedsvc.settings import Settings
from tests.conftest import REPO, SEED, SEED_STREAM

SHIPPED = REPO / "config" / "feedsvc.toml"
ATOM = "{http://www.w3.org/2005/Atom}"


def test_setting_only_the_port_moves_the_base_url_with_it() -> None:
    settings = Settings.load(SHIPPED, environ={"FEEDSVC_HTTP_PORT": "9000"})
    assert settings.http_port == 9000
    assert settings.public_base_url == "http://127.0.0.1:9000"
    assert settings.public_base_url_derived


def test_the_defaults_link_where_the_service_listens() -> None:
    settings = Settings.load(None, environ={})
    assert settings.public_base_url == "http://127.0.0.1:8080"
    assert settings.public_base_url_derived


def test_an_explicit_base_url_wins_from_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "feedsvc.toml"
    config.write_text('http_port = 9000\npublic_base_url = "https://news.example.org"\n')
    from_file = Settings.load(config, environ={})
    assert from_file.public_base_url == "https://news.example.org"
    assert not from_file.public_base_url_derived
    from_env = Settings.load(
        None,
        environ={
            "FEEDSVC_HTTP_PORT": "9000",
            "FEEDSVC_PUBLIC_BASE_URL": "https://feeds.example.org",
        },
    )
    assert from_env.public_base_url == "https://feeds.example.org"
    assert not from_env.public_base_url_derived
    assert from_env.replace(http_port=9001).public_base_url == "https://feeds.example.org"


@pytest.mark.parametrize(
    ("host", "base"),
    [
        ("0.0.0.0", "http://localhost:9000"),
        ("::", "http://localhost:9000"),
        ("::1", "http://[::1]:9000"),
        ("feeds.internal", "http://feeds.internal:9000"),
    ],
)
def test_a_derived_base_url_is_a_host_a_link_can_point_at(host: str, base: str) -> None:
    settings = Settings.load(None, environ={"FEEDSVC_HTTP_HOST": host, "FEEDSVC_HTTP_PORT": "9000"})
    assert settings.public_base_url == base


def test_a_derived_base_url_follows_a_changed_port() -> None:
    settings = Settings.load(None, environ={})
    assert settings.replace(http_port=9100).public_base_url == "http://127.0.0.1:9100"


def test_the_derived_flag_is_not_a_setting_one_can_set() -> None:
    with pytest.raises(ConfigError, match="public_base_url_derived"):
        Settings.load(None, environ={}, public_base_url_derived=True)
    unset = Settings.load(None, environ={"FEEDSVC_PUBLIC_BASE_URL_DERIVED": "false"})
    assert unset.public_base_url_derived


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_with_only_the_port(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    """Start ``feedsvc serve`` on the shipped config with FEEDSVC_HTTP_PORT set (and the
    data folder in tmp_path); return it, its port and the line it printed on start."""
    port = _free_port()
    stderr = tmp_path / "stderr.log"
    child = subprocess.Popen(
        [sys.executable, "-m", "feedsvc.cli", "--config", str(SHIPPED), "serve"],
        stdout=subprocess.PIPE,
        stderr=stderr.open("wb"),
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")},
            "FEEDSVC_HTTP_PORT": str(port),
            "FEEDSVC_DATA_DIR": str(tmp_path / "data"),
            "FEEDSVC_SEED": str(SEED),
        },
    )
    assert child.stdout is not None
    for raw in child.stdout:  # serve prints this line once it listens
        if b"serving" in raw:
            return child, port, raw.decode()
    child.wait()
    pytest.fail(f"feedsvc serve did not start:\n{stderr.read_text()}")


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=60)


async def test_feedsvc_serve_with_only_the_port_set_links_to_that_port(tmp_path: Path) -> None:
    child, port, started = _serve_with_only_the_port(tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        assert f"serving {base}/" in started
        assert "derived" in started

        async with aiohttp.ClientSession() as session:
            feed = f"{base}/feeds/stories/{SEED_STREAM}.atom"
            async with session.get(feed) as response:
                assert response.status == 200
                root = ElementTree.fromstring(await response.read())
            async with session.get(f"{base}/stories/{SEED_STREAM}") as response:
                page = await response.text()
        links = {e.get("rel"): e.get("href") for e in root.iterfind(f"{ATOM}link")}
        assert links["self"] == feed
        assert links["alternate"] == f"{base}/stories/{SEED_STREAM}"
        assert f'href="{feed}"' in page  # the page's autodiscovery link
    finally:
        _stop(child)
