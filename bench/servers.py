"""Server processes a benchmark starts and loads: HTTP calls, CPU pinning, wrk.

``bench.api`` and ``bench.feeds`` run the service, and a bare aiohttp baseline
(``bench/bare.py``), as processes of their own on 127.0.0.1 (:func:`started`), ask them
things with :func:`request` and :func:`get`, and load them with ``wrk``
(:func:`run_wrk`). Not a benchmark: it has no ``run``.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

SERVER_CPU = 0
"""The CPU the servers are pinned to (when pinning)."""
CLIENT_CPU = 1
"""The CPU wrk (and a client in this process) is pinned to (when pinning)."""
START_TIMEOUT_S = 60.0
THREADS = 1
"""wrk's ``-t``"""
CONNECTIONS = 64
"""wrk's ``-c``"""
WRK_INSTALL = "apt-get update && apt-get install -y wrk"

HOP_HEADERS = frozenset(
    {"date", "server", "content-length", "connection", "keep-alive", "transfer-encoding"}
)
"""Headers aiohttp writes itself: not copied to a bare server, not compared."""


# -- ports, processes, pinning ------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds_of(pid: int) -> float | None:
    """User + system CPU time process ``pid`` has used so far, every thread (from
    /proc; None elsewhere or once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def pinned(command: Sequence[str], cpu: int, pin: bool) -> list[str]:
    """``command`` pinned to ``cpu`` with taskset (when ``pin``)."""
    return ["taskset", "-c", str(cpu), *command] if pin else list(command)


def clean_env() -> dict[str, str]:
    """This environment without FEEDSVC_* variables: the TOML file alone configures."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}


def pinning(clients: str, layout: str) -> tuple[bool, str]:
    """Whether servers and their clients can be pinned to SERVER_CPU and CLIENT_CPU,
    and how it is said: ``layout`` when they can; ``clients`` names what shares every
    CPU with the servers when taskset is missing."""
    if shutil.which("taskset") is None:
        return False, f"none: taskset (util-linux) not found; servers and {clients} share every CPU"
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if not {SERVER_CPU, CLIENT_CPU} <= usable:
        return False, f"none: CPUs {SERVER_CPU} and {CLIENT_CPU} are not both usable here"
    return True, layout


def write_toml(values: Mapping[str, Any], path: Path) -> None:
    """A flat TOML file of strings, numbers and booleans."""
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{key} = {value!r}")
        else:
            lines.append(f"{key} = {orjson.dumps(str(value)).decode()}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- HTTP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, its body as sent (never decompressed)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def comparable_headers(self) -> dict[str, str]:
        """The headers the application chose (not Date, Server, Content-Length…)."""
        return {k: v for k, v in self.headers if k.lower() not in HOP_HEADERS}

    def json(self) -> Any:
        return orjson.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, tuple(response.getheaders()), data)
    finally:
        conn.close()


def get(port: int, path: str, headers: Mapping[str, str] | None = None) -> Reply:
    """GET http://127.0.0.1:port/path (a 5 s timeout)."""
    return request(port, "GET", path, headers=headers, timeout=5.0)


# -- server processes -----------------------------------------------------------------------


@dataclass
class Server:
    """A server process started by the benchmark."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def log_lines(self) -> int:
        """How many lines the process has written to its log."""
        try:
            return len(self.log.read_text(encoding="utf-8", errors="replace").splitlines())
        except OSError:
            return 0

    def fail(self, why: str) -> AssertionError:
        return AssertionError(f"{self.name}: {why}\n--- its log ---\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the process so far (from /proc; None elsewhere)."""
        return cpu_seconds_of(self.process.pid)

    def wait_for(self, path: str, ok: int = 200, timeout: float = START_TIMEOUT_S) -> Reply:
        """Poll ``path`` until it answers ``ok`` (the process must stay up)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self.fail(f"exited with status {self.process.returncode}")
            try:
                reply = get(self.port, path)
                if reply.status == ok:
                    return reply
                last = f"status {reply.status}"
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        raise self.fail(f"{path} did not answer {ok} within {timeout:.0f} s ({last})")


@contextmanager
def started(name: str, command: Sequence[str], port: int, folder: Path) -> Iterator[Server]:
    """Run ``command`` in ``folder`` (made if missing) as a process, its output to
    ``<folder>/<name>.log``; stop it on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            list(command),
            cwd=folder,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Server(name, port, process, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# -- wrk ------------------------------------------------------------------------------------


def wrk_version() -> str:
    """wrk's version line."""
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def wrk_process(
    arguments: Sequence[str], seconds: float, pin: bool, connections: int = CONNECTIONS
) -> subprocess.Popen[str]:
    """Start ``wrk -t1 -c<connections> -d<seconds>s <arguments>`` (64 connections unless
    told), pinned to CLIENT_CPU when ``pin``; its output is captured."""
    command = ["wrk", f"-t{THREADS}", f"-c{connections}", f"-d{seconds}s", *arguments]
    return subprocess.Popen(
        pinned(command, CLIENT_CPU, pin),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wrk_output(process: subprocess.Popen[str], seconds: float) -> str:
    """Wait for a wrk started for ``seconds`` (bounded) and return what it printed; a
    failed wrk stops the benchmark."""
    try:
        out, err = process.communicate(timeout=seconds + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise AssertionError(f"wrk failed ({process.returncode}):\n{out}{err}")
    return out


def run_wrk(arguments: Sequence[str], seconds: float, pin: bool) -> str:
    """One wrk run, start to end: what it printed."""
    return wrk_output(wrk_process(arguments, seconds, pin), seconds)


# -- PostgreSQL -----------------------------------------------------------------------------


def database_named(url: str, name: str) -> str:
    """``url`` (a ``postgresql://`` server URL) naming the database ``name``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement, timeout=60)
    finally:
        await conn.close()


@contextmanager
def scratch_database(server: str, prefix: str = "feedsvc_bench_") -> Iterator[str]:
    """A new, empty database ``<prefix><random>`` on the PostgreSQL ``server`` (a URL
    whose user may create databases); its URL. Dropped on the way out, its remaining
    connections terminated first."""
    name = f"{prefix}{secrets.token_hex(5)}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield database_named(server, name)
    finally:
        asyncio.run(
            _admin(
                server,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            )
        )
