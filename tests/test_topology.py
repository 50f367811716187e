"""The scale-out topology of docker-compose.scale.yml, checked and then run without Docker.

First the files: the compose file and config/nginx.conf are parsed and checked for what
the topology depends on (both replicas in the upstream, the replicas' log in the
postgres service, the cache honouring feedsvc's headers with a lock and revalidation,
the API and the live tail never cached, the live tail not buffered), and the config is
given to ``nginx -t``.

Then the topology itself, on loopback: two ``feedsvc serve`` processes (the container's
command and config, each with its own data_dir) on ONE shared log, and the
distribution's nginx in front of them running config/nginx.conf with only its
addresses and paths substituted (:func:`render_nginx_conf`). The shared log is a
scratch PostgreSQL database when ``FEEDSVC_TEST_DATABASE_URL`` names a server and this
feedsvc has a PostgreSQL adapter, else one SQLite file both replicas open. Upstream
requests are counted from the replicas' ``/metrics``.

Without nginx the topology tests are skipped, except in CI (``CI=true``), where they
fail: CI installs nginx (.ci/run).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from feedsvc.errors import ConfigError
from feedsvc.settings import Settings
from feedsvc.store import make_store
from tests.conftest import database_url, pg_admin

ROOT = Path(__file__).resolve().parents[1]
SCALE_COMPOSE = ROOT / "docker-compose.scale.yml"
NGINX_CONF = ROOT / "config" / "nginx.conf"
CONTAINER_CONFIG = ROOT / "config" / "docker.toml"
SEED = ROOT / "events" / "seed" / "ct-doj-1373.ndjson"
SLUG = "ct-doj-section-1373-compliance"
CONTAINER_PORT = 8080
"""Where feedsvc listens inside its container (config/docker.toml)."""


# -- nginx's configuration language ---------------------------------------------------


@dataclass
class Directive:
    """One nginx directive: its name, its arguments, and its block if it has one."""

    name: str
    args: list[str]
    block: list[Directive] | None = None
    line: int = 0

    def children(self, name: str) -> list[Directive]:
        """The directives called ``name`` directly inside this one's block."""
        return [d for d in self.block or [] if d.name == name]

    def child(self, name: str) -> Directive | None:
        """The last directive called ``name`` in this block (the one nginx uses)."""
        found = self.children(name)
        return found[-1] if found else None

    def walk(self) -> Iterator[Directive]:
        """This directive and every one nested inside it."""
        yield self
        for d in self.block or []:
            yield from d.walk()


_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>\#[^\n]*)|(?P<punct>[{};])
    |"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^'\\]|\\.)*)'|(?P<word>[^\s{};"'#][^\s{};]*)""",
    re.VERBOSE,
)


def parse_nginx(text: str) -> Directive:
    """The configuration as a tree, under a root directive named ``main``."""
    root = Directive("main", [], [])
    stack = [root]
    current: list[str] = []
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m is not None, f"nginx.conf line {line}: cannot read {text[pos : pos + 20]!r}"
        pos = m.end()
        kind = m.lastgroup
        if kind in ("space", "comment"):
            line += m.group(0).count("\n")
            continue
        if kind == "punct":
            punct = m.group(0)
            if punct == "}":
                assert not current, f"nginx.conf line {line}: {current} lacks a ';'"
                assert len(stack) > 1, f"nginx.conf line {line}: unbalanced '}}'"
                stack.pop()
                continue
            assert current, f"nginx.conf line {line}: {punct!r} without a directive"
            directive = Directive(current[0], current[1:], [] if punct == "{" else None, line)
            parent_block = stack[-1].block
            assert parent_block is not None
            parent_block.append(directive)
            if punct == "{":
                stack.append(directive)
            current = []
            continue
        current.append(m.group(kind or "word"))
    assert not current, f"nginx.conf ends inside the directive {current}"
    assert len(stack) == 1, "nginx.conf ends inside a block"
    return root


def http_block(conf: Directive) -> Directive:
    """The ``http`` block."""
    found = conf.child("http")
    assert found is not None, "nginx.conf has no http block"
    return found


def the_server(conf: Directive) -> Directive:
    """The one ``server`` block."""
    servers = http_block(conf).children("server")
    assert len(servers) == 1, f"one server block expected, found {len(servers)}"
    return servers[0]


def location_for(server: Directive, path: str) -> Directive:
    """The ``location`` nginx picks for ``path``: an exact match; else the longest
    prefix, unless a regex (in file order) matches and the prefix is not ``^~``."""
    locations = server.children("location")
    prefix: Directive | None = None
    for loc in locations:
        if loc.args[0] == "=" and loc.args[1] == path:
            return loc
        if len(loc.args) == 1 or loc.args[0] == "^~":
            value = loc.args[-1]
            if path.startswith(value) and (prefix is None or len(value) > len(prefix.args[-1])):
                prefix = loc
    if prefix is None or prefix.args[0] != "^~":
        for loc in locations:
            if loc.args[0] in ("~", "~*"):
                flags = re.IGNORECASE if loc.args[0] == "~*" else 0
                if re.search(loc.args[1], path, flags):
                    return loc
    assert prefix is not None, f"no location serves {path}"
    return prefix


def effective(conf: Directive, location: Directive, name: str) -> list[str] | None:
    """A directive's arguments in effect in ``location``, inherited down from ``http``
    and ``server`` when the location does not set it."""
    for level in (location, the_server(conf), http_block(conf)):
        found = level.child(name)
        if found is not None:
            return found.args
    return None


def duration_s(value: str) -> float:
    """An nginx time (``75s``, ``1h``, ``500ms``, ``30``) in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert m is not None, f"not an nginx time: {value}"
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]
    return int(m.group(1)) * unit


def size_bytes(value: str) -> int:
    """An nginx size (``2m``, ``512k``, ``1024``) in bytes."""
    m = re.fullmatch(r"(\d+)([kKmMgG])?", value)
    assert m is not None, f"not an nginx size: {value}"
    unit = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[(m.group(2) or "").lower()]
    return int(m.group(1)) * unit


# -- the compose file -------------------------------------------------------------------


def scale_compose() -> dict[str, Any]:
    """docker-compose.scale.yml as compose reads it (YAML merge keys resolved)."""
    document = yaml.safe_load(SCALE_COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.scale.yml must be a mapping"
    services = document.get("services")
    assert isinstance(services, dict)
    return document


def replica_names(document: dict[str, Any]) -> list[str]:
    """The services that run feedsvc (built from this repository)."""
    return sorted(name for name, service in document["services"].items() if "build" in service)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, mapping or list syntax."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(str(e).split("=", 1) for e in env)
    return {str(k): str(v) for k, v in env.items()}


def published(service: dict[str, Any]) -> dict[int, int]:
    """The service's published ports: container port -> host port."""
    found: dict[int, int] = {}
    for entry in service.get("ports", []):
        *host, container = str(entry).split(":")
        found[int(container.split("/")[0])] = int(host[-1])
    return found


# -- rendering config/nginx.conf for loopback -------------------------------------------


def nginx_binary() -> str | None:
    """The distribution's nginx, also where a non-root PATH has no sbin."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def require_nginx() -> str:
    """nginx's path; a skip without it, or a failure in CI, which installs it."""
    binary = nginx_binary()
    if binary is None:
        message = (
            "nginx is not installed (apt-get install nginx): the topology of "
            "docker-compose.scale.yml cannot run without it"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; CI must install it (.ci/run)")
        pytest.skip(message)
    return binary


def render_nginx_conf(
    text: str, upstreams: Mapping[str, str], listen: str, base: Path, nginx: str | None
) -> str:
    """config/nginx.conf with its container addresses and paths swapped for local ones.

    ``upstreams`` maps each ``server`` of the upstream (``feedsvc-1:8080``) to a local
    address, ``listen`` replaces the listening port, and every path under ``/var`` moves
    under ``base``. Each substitution must find what it replaces, so a config that moves
    away from what this renderer knows fails here rather than running something else.
    """
    out = text
    for container, local in upstreams.items():
        out, n = re.subn(
            rf"(?m)^(\s*server\s+){re.escape(container)}(\s*;)", rf"\g<1>{local}\2", out
        )
        assert n == 1, f"nginx.conf: no upstream server {container}"
    out, n = re.subn(r"(?m)^(\s*listen\s+)80(\s*;)", rf"\g<1>{listen}\2", out)
    assert n == 1, "nginx.conf: no `listen 80;`"
    for old, new in (
        ("/var/run/", base / "run"),
        ("/var/log/nginx/", base / "log"),
        ("/var/cache/nginx/", base / "cache"),
    ):
        assert old in out, f"nginx.conf names nothing under {old}"
        out = out.replace(old, f"{new}/")
    assert "/var/" not in out, "nginx.conf names a path the renderer does not move"
    extra = []
    if nginx is not None:
        built = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False).stderr
        for module in ("fastcgi", "uwsgi", "scgi"):
            if f"--without-http_{module}_module" not in built:
                extra.append(f"    {module}_temp_path {base / 'cache' / module};\n")
    out, n = re.subn(r"(?m)^http\s*\{\n", lambda m: m.group(0) + "".join(extra), out)
    assert n == 1
    if os.geteuid() == 0:
        # the workers would otherwise be `nobody`, who cannot enter the test's tmp dirs
        out = "user root;\n" + out
    return out


def prepare_nginx_dirs(base: Path) -> None:
    """The folders a rendered config names."""
    for sub in ("run", "log", "cache", "prefix"):
        (base / sub).mkdir(parents=True, exist_ok=True)


def nginx_argv(nginx: str, base: Path, conf: Path) -> list[str]:
    """The official image's command (``nginx -g 'daemon off;'``), with a prefix, the
    config and the startup error log in ``base``."""
    return [
        nginx,
        "-p",
        f"{base / 'prefix'}/",
        "-c",
        str(conf),
        "-e",
        str(base / "log" / "startup-error.log"),
        "-g",
        "daemon off;",
    ]


# -- the checks of the files --------------------------------------------------------------


def test_the_scale_compose_file_runs_postgres_two_replicas_and_nginx() -> None:
    document = scale_compose()
    services = document["services"]
    replicas = replica_names(document)
    assert len(replicas) == 2, f"two feedsvc replicas expected, found {replicas}"
    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:15")
    assert postgres.get("healthcheck", {}).get("test"), "postgres has no healthcheck"
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "ports" not in postgres, "the database is published outside the project"
    data_volumes = set()
    for name in replicas:
        service = services[name]
        env = environment(service)
        url = urlsplit(env["FEEDSVC_DATABASE_URL"])
        assert url.scheme == "postgresql" and url.hostname == "postgres"
        assert url.path == "/" + environment(postgres)["POSTGRES_DB"]
        assert url.username == environment(postgres)["POSTGRES_USER"]
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        data = [v for v in service["volumes"] if str(v).split(":")[1] == "/data"]
        assert len(data) == 1, f"{name}: its read model must be on a volume of its own"
        data_volumes.add(str(data[0]).split(":")[0])
        test = service["healthcheck"]["test"]
        assert "/readyz" in " ".join(test), f"{name}: the healthcheck must ask /readyz"
    assert len(data_volumes) == 2, "the replicas share a data volume"
    assert data_volumes <= set(document["volumes"])
    nginx = services["nginx"]
    assert str(nginx["image"]).split(":")[0] == "nginx", "the official nginx image"
    assert "./config/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    for name in replicas:
        assert nginx["depends_on"][name]["condition"] == "service_healthy"


def test_the_replicas_link_to_the_proxy() -> None:
    services = scale_compose()["services"]
    proxy_port = published(services["nginx"])[80]
    for name in replica_names(scale_compose()):
        base = urlsplit(environment(services[name])["FEEDSVC_PUBLIC_BASE_URL"])
        assert base.port == proxy_port, f"{name} links to {base.port}, nginx is on {proxy_port}"
        assert "ports" not in services[name], f"{name} is reachable past the proxy"


def test_nginx_balances_between_both_replicas() -> None:
    conf = parse_nginx(NGINX_CONF.read_text(encoding="utf-8"))
    upstreams = http_block(conf).children("upstream")
    assert len(upstreams) == 1
    servers = {d.args[0] for d in upstreams[0].children("server")}
    expected = {f"{name}:{CONTAINER_PORT}" for name in replica_names(scale_compose())}
    assert servers == expected
    name = upstreams[0].args[0]
    for d in conf.walk():
        if d.name == "proxy_pass":
            assert d.args == [f"http://{name}"], f"line {d.line}: proxy_pass {d.args}"
    assert the_server(conf).child("listen") is not None
    assert the_server(conf).children("listen")[0].args == ["80"]


def test_nginx_caches_feeds_as_feedsvc_says() -> None:
    conf = parse_nginx(NGINX_CONF.read_text(encoding="utf-8"))
    server = the_server(conf)
    # nothing overrides feedsvc's Cache-Control, ETag or Vary
    for d in conf.walk():
        assert d.name not in ("proxy_cache_valid", "proxy_ignore_headers", "expires"), (
            f"line {d.line}: {d.name} would override feedsvc's caching headers"
        )
        if d.name == "proxy_hide_header":
            assert d.args[0].lower() not in ("etag", "vary", "cache-control", "last-modified")
        assert d.name != "gzip" or d.args == ["off"], "nginx's gzip would weaken the ETags"
    zones = [
        a.split("=", 1)[1].split(":")[0]
        for d in http_block(conf).children("proxy_cache_path")
        for a in d.args
        if a.startswith("keys_zone=")
    ]
    assert len(zones) == 1, f"one cache zone expected, found {zones}"
    for path in (
        "/feeds/all.atom",
        f"/feeds/stories/{SLUG}.json",
        "/feeds/topics/immigration.rss",
        f"/stories/{SLUG}",
        "/",
    ):
        loc = location_for(server, path)
        assert effective(conf, loc, "proxy_cache") == zones, f"{path} not cached"
        assert effective(conf, loc, "proxy_cache_lock") == ["on"], f"{path}: no cache lock"
        assert effective(conf, loc, "proxy_cache_revalidate") == ["on"], f"{path}: no revalidate"
        methods = effective(conf, loc, "proxy_cache_methods") or ["GET", "HEAD"]
        assert "POST" not in methods
        key = effective(conf, loc, "proxy_cache_key") or ["$scheme$proxy_host$request_uri"]
        assert "$request_uri" in key[0], "the query (?as_of=) must be part of the key"
    add = [d.args for d in server.children("add_header")]
    assert ["X-Cache-Status", "$upstream_cache_status", "always"] in add
    for loc in server.children("location"):
        assert not loc.children("add_header"), "an add_header in a location drops the server's"
    headers = {d.args[0].lower(): d.args[1] for d in server.children("proxy_set_header")}
    assert headers["x-forwarded-for"] == "$proxy_add_x_forwarded_for"
    assert headers["x-forwarded-proto"] == "$scheme"
    assert "accept-encoding" not in headers, "feedsvc must see the reader's Accept-Encoding"
    limit = effective(
        conf, location_for(server, f"/api/stories/{SLUG}/events"), "client_max_body_size"
    )
    assert limit is not None and size_bytes(limit[0]) > Settings().max_body_bytes


def test_nginx_never_caches_the_api_and_streams_the_live_tail() -> None:
    conf = parse_nginx(NGINX_CONF.read_text(encoding="utf-8"))
    server = the_server(conf)
    settings = Settings.load(CONTAINER_CONFIG, environ={})
    for path in (
        "/api/events",
        "/api/events/live",
        f"/api/stories/{SLUG}/events",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        loc = location_for(server, path)
        assert effective(conf, loc, "proxy_cache") in (None, ["off"]), f"{path} is cached"
    log = location_for(server, "/api/events")
    timeout = effective(conf, log, "proxy_read_timeout") or ["60s"]
    assert duration_s(timeout[0]) > settings.max_wait_s, "a long-poll would be cut"
    live = location_for(server, "/api/events/live")
    assert effective(conf, live, "proxy_buffering") == ["off"], "SSE must not be buffered"
    timeout = effective(conf, live, "proxy_read_timeout") or ["60s"]
    assert duration_s(timeout[0]) >= 4 * settings.sse_heartbeat_s
    assert effective(conf, live, "proxy_http_version") == ["1.1"]


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = require_nginx()
    names = replica_names(scale_compose())
    upstreams = {f"{n}:{CONTAINER_PORT}": f"127.0.0.1:{free_port()}" for n in names}
    rendered = render_nginx_conf(
        NGINX_CONF.read_text(encoding="utf-8"),
        upstreams,
        f"127.0.0.1:{free_port()}",
        tmp_path,
        nginx,
    )
    prepare_nginx_dirs(tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(rendered, encoding="utf-8")
    argv = nginx_argv(nginx, tmp_path, conf)
    done = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


# -- the topology, run here -------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_url() -> str | None:
    """``FEEDSVC_TEST_DATABASE_URL`` when it names a PostgreSQL server and this feedsvc
    can keep its log there; else None (the replicas share an SQLite file)."""
    url = os.environ.get("FEEDSVC_TEST_DATABASE_URL", "")
    if not url.startswith(("postgresql://", "postgres://")):
        return None
    try:
        make_store(Settings(database_url=url))
    except ConfigError:
        return None
    return url


@contextmanager
def shared_log(tmp: Path) -> Iterator[str]:
    """The ``database_url`` both replicas use: a scratch PostgreSQL database (dropped
    after) or an SQLite file."""
    server = postgres_url()
    if server is None:
        yield f"sqlite:///{tmp / 'shared.sqlite3'}"
        return
    name = f"feedsvc_topo_{secrets.token_hex(6)}"
    pg_admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield database_url(server, name)
    finally:
        pg_admin(
            server,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
            f'DROP DATABASE IF EXISTS "{name}"',
        )


@dataclass
class Answer:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's value (names are case-insensitive)."""
        return self.headers.get(name.lower())


def request(
    port: int,
    path: str,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> Answer:
    """One request to 127.0.0.1:``port``; without an ``Accept-Encoding`` it asks for
    identity."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        data = response.read()
        found = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, found, data)
    finally:
        conn.close()


# a route's template may have braces of its own: /feeds/all.{fmt}
_SAMPLE = re.compile(r"^feedsvc_http_requests_total\{(?P<labels>.*)\}\s+(?P<value>\S+)$")


@dataclass
class Topology:
    """Two replicas on one log and nginx in front, all on loopback."""

    proxy: int
    replicas: list[int]
    data_dirs: list[Path]
    database_url: str
    logs: list[Path] = field(default_factory=list)

    def upstream_requests(self, method: str = "GET", status: str | None = None) -> int:
        """Requests the replicas have answered, summed (their own /metrics excluded)."""
        total = 0
        for port in self.replicas:
            answer = request(port, "/metrics")
            assert answer.status == 200
            for line in answer.body.decode().splitlines():
                m = _SAMPLE.match(line)
                if m is None:
                    continue
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
                if labels["method"] != method or "metrics" in labels["route"]:
                    continue
                if status is not None and labels["status"] != status:
                    continue
                total += int(float(m.group("value")))
        return total

    def admin_token(self) -> str:
        """The admin token the first replica wrote on its first start."""
        return (self.data_dirs[0] / "admin.token").read_text(encoding="utf-8").strip()


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_ready(
    process: subprocess.Popen[bytes], port: int, path: str, log: Path, patience: float = 60.0
) -> None:
    deadline = time.monotonic() + patience
    while True:
        assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if request(port, path).status == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{path} not ready:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


@contextmanager
def topology(tmp: Path, **replica_settings: str) -> Iterator[Topology]:
    """Run the replicas and nginx of docker-compose.scale.yml on loopback; stop them
    after. ``replica_settings`` are extra ``FEEDSVC_*`` variables (``CACHE_MAX_AGE``)."""
    nginx = require_nginx()
    document = scale_compose()
    names = replica_names(document)
    proxy_port = free_port()
    ports = [free_port() for _ in names]
    processes: list[subprocess.Popen[bytes]] = []
    handles = []
    with shared_log(tmp) as database_url:
        topo = Topology(proxy_port, ports, [tmp / n for n in names], database_url)
        try:
            for name, port, data_dir in zip(names, ports, topo.data_dirs, strict=True):
                data_dir.mkdir()
                env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
                env |= environment(document["services"][name])
                public = urlsplit(env["FEEDSVC_PUBLIC_BASE_URL"])
                env |= {
                    "FEEDSVC_DATABASE_URL": database_url,
                    "FEEDSVC_PUBLIC_BASE_URL": f"{public.scheme}://127.0.0.1:{proxy_port}",
                    "FEEDSVC_DATA_DIR": str(data_dir),
                    "FEEDSVC_HTTP_HOST": "127.0.0.1",
                    "FEEDSVC_HTTP_PORT": str(port),
                    "FEEDSVC_SEED": str(SEED),
                    # an append through one replica reaches the other's projections
                    # by this safety-net interval (SQLite has no cross-process wake-up)
                    "FEEDSVC_CATCHUP_INTERVAL_S": "0.2",
                    "FEEDSVC_LOG_LEVEL": "WARNING",
                }
                env |= {f"FEEDSVC_{k.upper()}": v for k, v in replica_settings.items()}
                log = tmp / f"{name}.log"
                topo.logs.append(log)
                handle = open(log, "wb")  # noqa: SIM115 - closed in the finally below
                handles.append(handle)
                launcher = "import sys; from feedsvc.cli import main; sys.exit(main())"
                argv = [sys.executable, "-c", launcher, "--config", str(CONTAINER_CONFIG), "serve"]
                processes.append(
                    subprocess.Popen(
                        argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
                    )
                )
                # one at a time, as compose starts them: the first does the first start
                _wait_until_ready(processes[-1], port, "/readyz", log)
            base = tmp / "nginx"
            prepare_nginx_dirs(base)
            upstreams = {
                f"{n}:{CONTAINER_PORT}": f"127.0.0.1:{p}" for n, p in zip(names, ports, strict=True)
            }
            conf = base / "nginx.conf"
            conf.write_text(
                render_nginx_conf(
                    NGINX_CONF.read_text(encoding="utf-8"),
                    upstreams,
                    f"127.0.0.1:{proxy_port}",
                    base,
                    nginx,
                ),
                encoding="utf-8",
            )
            log = tmp / "nginx.out"
            topo.logs.append(log)
            handle = open(log, "wb")  # noqa: SIM115 - closed in the finally below
            handles.append(handle)
            processes.append(
                subprocess.Popen(
                    nginx_argv(nginx, base, conf), stdout=handle, stderr=subprocess.STDOUT
                )
            )
            _wait_until_ready(processes[-1], proxy_port, "/healthz", log)
            yield topo
        finally:
            for process in reversed(processes):
                # nginx: SIGQUIT is its graceful stop; feedsvc: SIGTERM
                is_nginx = process is processes[-1] and len(processes) > len(names)
                _stop(process, signal.SIGQUIT if is_nginx else signal.SIGTERM)
            for handle in handles:
                handle.close()


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """One topology for the module's checks (cache_max_age as configured: 60 s)."""
    with topology(tmp_path_factory.mktemp("topology")) as running:
        yield running


def test_a_feed_through_nginx_carries_the_upstreams_etag_and_is_then_a_hit(
    topo: Topology,
) -> None:
    path = "/feeds/all.atom"
    before = topo.upstream_requests()
    first = request(topo.proxy, path)
    assert first.status == 200
    assert first.header("x-cache-status") == "MISS"
    direct = request(topo.replicas[0], path)
    assert first.header("etag") == direct.header("etag") and first.body == direct.body
    assert first.header("cache-control") == direct.header("cache-control")
    second = request(topo.proxy, path)
    assert second.status == 200 and second.header("x-cache-status") == "HIT"
    assert second.header("etag") == first.header("etag") and second.body == first.body
    assert topo.upstream_requests() - before == 1 + 1, "one through nginx, one direct"


def test_a_conditional_get_through_nginx_answers_304(topo: Topology) -> None:
    path = "/feeds/all.rss"
    first = request(topo.proxy, path)
    etag = first.header("etag")
    assert first.status == 200 and etag
    before = topo.upstream_requests()
    again = request(topo.proxy, path, {"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    assert again.header("etag") == etag
    assert again.header("x-cache-status") == "HIT"
    since = request(topo.proxy, path, {"If-Modified-Since": first.header("last-modified") or ""})
    assert since.status == 304
    assert topo.upstream_requests() == before, "nginx answered the 304s from its cache"


def test_gzip_and_identity_are_cached_apart(topo: Topology) -> None:
    path = "/feeds/all.json"
    before = topo.upstream_requests()
    plain = request(topo.proxy, path)
    zipped = request(topo.proxy, path, {"Accept-Encoding": "gzip"})
    assert plain.status == zipped.status == 200
    assert plain.header("x-cache-status") == zipped.header("x-cache-status") == "MISS"
    assert plain.header("content-encoding") is None
    assert zipped.header("content-encoding") == "gzip"
    assert gzip.decompress(zipped.body) == plain.body
    assert plain.header("etag") != zipped.header("etag")
    assert "accept-encoding" in (plain.header("vary") or "").lower()
    for _ in range(2):
        again_plain = request(topo.proxy, path)
        again_zipped = request(topo.proxy, path, {"Accept-Encoding": "gzip"})
        assert again_plain.header("x-cache-status") == "HIT"
        assert again_zipped.header("x-cache-status") == "HIT"
        assert again_plain.body == plain.body and again_zipped.body == zipped.body
        assert again_zipped.header("content-encoding") == "gzip"
    assert topo.upstream_requests() - before == 2, "one upstream request per encoding"


def test_a_burst_of_readers_makes_one_upstream_request(topo: Topology) -> None:
    path = "/feeds/topics/immigration.atom"
    readers = 20
    before = topo.upstream_requests()
    start = threading.Barrier(readers)

    def read(_: int) -> Answer:
        start.wait(timeout=30)
        return request(topo.proxy, path)

    with ThreadPoolExecutor(max_workers=readers) as pool:
        answers = list(pool.map(read, range(readers)))
    assert [a.status for a in answers] == [200] * readers
    assert len({a.body for a in answers}) == 1 and len({a.header("etag") for a in answers}) == 1
    statuses = sorted(str(a.header("x-cache-status")) for a in answers)
    assert statuses.count("MISS") == 1, statuses
    assert statuses.count("HIT") == readers - 1, statuses
    assert topo.upstream_requests() - before == 1


def test_both_replicas_serve_the_same_document(topo: Topology) -> None:
    for path in (f"/feeds/stories/{SLUG}.atom", "/feeds/topics/immigration.json", "/"):
        answers = [request(port, path) for port in topo.replicas]
        assert [a.status for a in answers] == [200, 200]
        assert answers[0].header("etag") == answers[1].header("etag"), path
        assert answers[0].body == answers[1].body, path
        assert f"http://127.0.0.1:{topo.proxy}/".encode() in answers[0].body, (
            f"{path} does not link to the proxy"
        )


def test_an_append_through_nginx_is_never_cached_and_becomes_visible(topo: Topology) -> None:
    path = f"/feeds/stories/{SLUG}.rss"  # not read through nginx by any other test
    headline = f"Justice Department rules on New York ({uuid.uuid4().hex[:8]})"
    event_id = str(uuid.uuid4())
    event = {
        "id": event_id,
        "type": "development.reported",
        "occurred_at": "2017-10-13",
        "data": {
            "development_id": f"new-york-decision-{uuid.uuid4().hex[:8]}",
            "kind": "ruling",
            "headline": headline,
            "body": "The department reached its decision on New York.",
        },
    }
    body = json.dumps(event).encode()
    headers = {
        "Authorization": f"Bearer {topo.admin_token()}",
        "Content-Type": "application/json",
    }
    url = f"/api/stories/{SLUG}/events"
    before = topo.upstream_requests("POST")
    created = request(topo.proxy, url, headers, "POST", body)
    assert created.status == 201, created.body
    assert not created.header("x-cache-status"), "an append went through the cache"
    replayed = request(topo.proxy, url, headers, "POST", body)
    assert replayed.status == 200, "the retry must reach feedsvc (idempotent replay)"
    assert not replayed.header("x-cache-status")
    assert topo.upstream_requests("POST") - before == 2
    log = request(topo.proxy, "/api/events?after=0&limit=1000")
    assert log.status == 200 and not log.header("x-cache-status")
    assert event_id in log.body.decode()
    # both replicas fold it (one of them only by catching up with the shared log)
    deadline = time.monotonic() + 30
    while not all(headline.encode() in request(p, path).body for p in topo.replicas):
        assert time.monotonic() < deadline, "a replica never showed the append"
        time.sleep(0.1)
    through = request(topo.proxy, path)
    assert through.status == 200 and headline.encode() in through.body
    assert through.header("x-cache-status") == "MISS"


def test_an_expired_entry_is_revalidated_with_its_etag(tmp_path: Path) -> None:
    with topology(tmp_path, cache_max_age="1") as small:
        path = "/feeds/all.atom"
        first = request(small.proxy, path)
        assert first.status == 200 and first.header("x-cache-status") == "MISS"
        not_modified = small.upstream_requests(status="304")
        seen = []
        deadline = time.monotonic() + 30
        while small.upstream_requests(status="304") == not_modified:
            answer = request(small.proxy, path)
            assert answer.status == 200 and answer.body == first.body
            seen.append(answer.header("x-cache-status"))
            assert time.monotonic() < deadline, f"never revalidated: {seen}"
            time.sleep(0.2)
        # the replica answered nginx's conditional request with 304: nginx sent the
        # entry's ETag, and got no body
        assert set(seen) <= {"HIT", "STALE", "UPDATING", "REVALIDATED", "EXPIRED"}, seen
        assert "MISS" not in seen


def test_the_live_tail_through_nginx_delivers_a_new_event(topo: Topology) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", topo.proxy, timeout=30)
    try:
        conn.request("GET", "/api/events/live", headers={"Accept": "text/event-stream"})
        response = conn.getresponse()
        assert response.status == 200
        assert (response.getheader("Content-Type") or "").startswith("text/event-stream")
        assert not response.getheader("X-Cache-Status")
        event_id = str(uuid.uuid4())
        event = {
            "id": event_id,
            "type": "development.reported",
            "occurred_at": "2017-10-14",
            "data": {
                "development_id": f"live-{uuid.uuid4().hex[:8]}",
                "kind": "statement",
                "headline": "A statement followed live",
                "body": "It reached the live tail through the proxy.",
            },
        }
        headers = {
            "Authorization": f"Bearer {topo.admin_token()}",
            "Content-Type": "application/json",
        }
        url = f"/api/stories/{SLUG}/events"
        created = request(topo.proxy, url, headers, "POST", json.dumps(event).encode())
        assert created.status == 201, created.body
        # the event arrives on the stream opened before it was appended (through the
        # cache-less location; its being unbuffered is checked on the config above)
        seen: list[bytes] = []
        while True:
            line = response.fp.readline()
            assert line, f"the stream ended before the event: {seen}"
            seen.append(line)
            if event_id.encode() in line:
                break
    finally:
        conn.close()
