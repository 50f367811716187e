"""A replica dies under load: what an operator of two replicas on PostgreSQL relies on.

Two ``feedsvc serve`` processes (each its own data_dir and port on loopback) share one
PostgreSQL log holding the seed story. Four writers append developments to the seed
story, spread over both replicas, each event with a client id; a reader keeps reading
from replica B. Replica A is killed with SIGKILL in the middle of the load. A writer
whose request to A fails (connection refused or reset: not acknowledged) sends the very
same body to B, as a client retrying safely does.

Then: every append answered ``201``/``200`` is in the log (read back through B's
``/api/events``) exactly once; B answered every read and append, before and after the
kill, without a ``5xx``; A, restarted on the same data_dir, becomes ready, and once both
replicas are caught up to the same head they answer the same ETag and bytes for every
feed of all stories and of the seed story. The only timings are generous timeouts.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import REPO, SEED, SEED_STREAM

WRITERS = 4
ACKS_BEFORE_KILL = 40
LOAD_BEFORE_KILL_S = 1.0
"""Replica A is killed once the load has run this long and made ACKS_BEFORE_KILL
acknowledged appends: in the middle of the load."""
LOAD_AFTER_KILL_S = 1.0
"""How long the writers go on after the kill."""
START_PATIENCE_S = 60.0
CONVERGE_PATIENCE_S = 60.0
PUBLIC_BASE_URL = "http://127.0.0.1:8080"
"""What both replicas link to (a proxy's address in production), so their documents
can be compared byte for byte; no request goes there."""
FEEDS = [
    f"/feeds/{scope}.{fmt}"
    for scope in ("all", f"stories/{SEED_STREAM}")
    for fmt in ("atom", "rss", "json")
]
LAUNCHER = "import sys; from feedsvc.cli import main; sys.exit(main())"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Answer:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes


def request(
    port: int,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Answer:
    """One request to 127.0.0.1:``port`` on a connection of its own (identity
    encoding); a connection failure raises OSError."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


@dataclass
class Replica:
    """One ``feedsvc serve`` process and where it keeps its things."""

    name: str
    port: int
    data_dir: Path
    env: dict[str, str]
    logs: list[Path] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self, stack: ExitStack) -> None:
        """Start (or start again) the process; the stack stops it."""
        log = self.data_dir.parent / f"{self.name}-{len(self.logs) + 1}.log"
        self.logs.append(log)
        handle = stack.enter_context(open(log, "wb"))  # noqa: SIM115 - the stack closes it
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, "serve"],
            cwd=REPO,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, self.process)

    def log_text(self) -> str:
        """What the current process wrote so far."""
        return self.logs[-1].read_text(encoding="utf-8", errors="replace")

    def wait_ready(self) -> float:
        """Wait for ``/readyz`` to answer 200; return how long it took."""
        assert self.process is not None
        started = time.monotonic()
        while True:
            code = self.process.poll()
            assert code is None, f"{self.name} exited {code}:\n{self.log_text()[-3000:]}"
            try:
                if request(self.port, "/readyz", timeout=5).status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            waited = time.monotonic() - started
            assert waited < START_PATIENCE_S, f"{self.name} not ready:\n{self.log_text()[-3000:]}"
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """A clean stop (SIGTERM), a kill if it does not come."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def two_replicas(database_url: str, tmp: Path) -> Iterator[tuple[Replica, Replica, ExitStack]]:
    """Replicas A and B on one log, and the stack that stops every process started
    (also one started again later), whatever happened."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    replicas = []
    for name in ("a", "b"):
        port = free_port()
        data_dir = tmp / name / "data"
        data_dir.mkdir(parents=True)
        env = base | {
            "FEEDSVC_DATABASE_URL": database_url,
            "FEEDSVC_DATA_DIR": str(data_dir),
            "FEEDSVC_HTTP_HOST": "127.0.0.1",
            "FEEDSVC_HTTP_PORT": str(port),
            "FEEDSVC_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "FEEDSVC_SEED": str(SEED),
            # the limit is one bucket for the service: the load is not about it
            "FEEDSVC_TOKEN_RATE_PER_S": "100000",
            "FEEDSVC_TOKEN_BURST": "100000",
            "FEEDSVC_LOG_LEVEL": "WARNING",
            "FEEDSVC_LOG_JSON": "false",
        }
        replicas.append(Replica(name, port, data_dir, env))
    a, b = replicas
    with ExitStack() as stack:
        a.start(stack)
        a.wait_ready()  # the first start imports the seed and writes the admin token
        b.start(stack)
        b.wait_ready()
        yield a, b, stack


@dataclass
class Attempt:
    """One request of the load: to which replica, what came back, and when."""

    event_id: str
    port: int
    status: int | None
    """None: the connection failed (not acknowledged)."""
    after_kill: bool
    error: str = ""


@dataclass
class Load:
    """What the writers and the reader saw."""

    killed: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    appends: list[Attempt] = field(default_factory=list)
    reads: list[tuple[str, int | None, bool, str]] = field(default_factory=list)
    bodies: dict[str, bytes] = field(default_factory=dict)

    def acknowledged(self) -> set[str]:
        """The ids of every append answered 201 or 200."""
        with self.lock:
            return {a.event_id for a in self.appends if a.status in (200, 201)}


def development(writer: int, i: int) -> dict[str, Any]:
    """A development.reported event with a client id."""
    return {
        "id": str(uuid.uuid4()),
        "type": "development.reported",
        "occurred_at": "2017-10-13",
        "data": {
            "development_id": f"failover-w{writer}-{i}",
            "headline": f"Failover writer {writer}, development {i}",
            "body": f"Development {i} of writer {writer}, appended while a replica dies.",
            "kind": "statement",
        },
    }


def writer(load: Load, number: int, ports: tuple[int, int], token: str) -> None:
    """Append one event at a time, to A and B in turn; after a failed attempt on A,
    send the very same body to B (a safe retry)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    path = f"/api/stories/{SEED_STREAM}/events"
    i = 0
    while not load.stop.is_set():
        i += 1
        event = development(number, i)
        body = json.dumps(event).encode()
        with load.lock:
            load.bodies[event["id"]] = body
        targets = ports if (number + i) % 2 == 0 else (ports[1],)
        for port in targets:
            after_kill = load.killed.is_set()
            try:
                answer = request(port, path, "POST", body, headers, timeout=15)
            except OSError as e:
                with load.lock:
                    load.appends.append(Attempt(event["id"], port, None, after_kill, repr(e)))
                continue
            with load.lock:
                load.appends.append(
                    Attempt(
                        event["id"], port, answer.status, after_kill, answer.body[:300].decode()
                    )
                )
            break


def reader(load: Load, port: int) -> None:
    """Read feeds and the log from one replica, over and over."""
    paths = ["/feeds/all.atom", f"/feeds/stories/{SEED_STREAM}.json", "/api/events?limit=50"]
    n = 0
    while not load.stop.is_set():
        path = paths[n % len(paths)]
        n += 1
        after_kill = load.killed.is_set()
        try:
            status: int | None = request(port, path, timeout=15).status
            error = ""
        except OSError as e:
            status, error = None, repr(e)
        with load.lock:
            load.reads.append((path, status, after_kill, error))


def read_log(port: int) -> list[dict[str, Any]]:
    """The whole log through ``/api/events``, a page at a time."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        answer = request(port, f"/api/events?after={after}&limit=1000")
        assert answer.status == 200, answer.body[:500]
        page = json.loads(answer.body)
        events.extend(page["events"])
        if not page["events"]:
            return events
        after = page["events"][-1]["position"]


def ready_state(port: int) -> dict[str, Any] | None:
    """``/readyz``'s body when it answers 200."""
    try:
        answer = request(port, "/readyz", timeout=5)
    except OSError:
        return None
    return json.loads(answer.body) if answer.status == 200 else None


def documents(port: int) -> dict[str, tuple[int, str | None, bytes]]:
    """Every compared feed as (status, ETag, body)."""
    found = {}
    for path in FEEDS:
        answer = request(port, path)
        found[path] = (answer.status, answer.headers.get("etag"), answer.body)
    return found


def test_a_replica_killed_under_load_loses_no_acknowledged_append(
    pg_url: str, tmp_path: Path
) -> None:
    with two_replicas(pg_url, tmp_path) as (a, b, processes):
        token = (a.data_dir / "admin.token").read_text(encoding="utf-8").strip()
        seed_head = read_log(b.port)[-1]["position"]
        load = Load()
        threads = [
            threading.Thread(target=writer, args=(load, n, (a.port, b.port), token), daemon=True)
            for n in range(WRITERS)
        ]
        threads.append(threading.Thread(target=reader, args=(load, b.port), daemon=True))
        try:
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            time.sleep(LOAD_BEFORE_KILL_S)
            while len(load.acknowledged()) < ACKS_BEFORE_KILL:
                assert time.monotonic() < deadline, "the load made too few appends"
                time.sleep(0.01)
            assert a.process is not None
            a.process.send_signal(signal.SIGKILL)
            load.killed.set()
            a.process.wait(timeout=10)
            time.sleep(LOAD_AFTER_KILL_S)
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)

        # B acknowledged every append sent to it, before the kill and after it: no 5xx,
        # and no conflict for an append expecting any version however the two interleave
        from_b = [x for x in load.appends if x.port == b.port]
        assert from_b and all(x.status in (200, 201) for x in from_b), [
            (x.status, x.error) for x in from_b if x.status not in (200, 201)
        ]
        assert any(x.after_kill and x.status in (200, 201) for x in from_b), (
            "B acknowledged no append after the kill"
        )
        assert load.reads and all(status == 200 for _, status, _, _ in load.reads), [
            r for r in load.reads if r[1] != 200
        ]
        assert any(after for _, _, after, _ in load.reads), "B answered no read after the kill"
        # A, before it died, answered no 5xx either
        from_a = [x for x in load.appends if x.port == a.port and x.status is not None]
        assert all(x.status in (200, 201) for x in from_a), [(x.status, x.error) for x in from_a]
        # every append was acknowledged by one of them in the end
        acknowledged = load.acknowledged()
        assert acknowledged == set(load.bodies)

        # every acknowledged append is in the log, once; the log is gapless
        log = read_log(b.port)
        ids = [e["id"] for e in log]
        assert len(ids) == len(set(ids)), "an event id is in the log twice"
        assert [e["position"] for e in log] == list(range(1, len(log) + 1))
        missing = acknowledged - set(ids)
        assert not missing, f"{len(missing)} acknowledged appends are not in the log"
        developments = [
            e["data"]["development_id"] for e in log if e["type"] == "development.reported"
        ]
        assert len(developments) == len(set(developments))
        for event in log:
            if event["id"] in load.bodies:
                sent = json.loads(load.bodies[event["id"]])
                assert event["data"] == sent["data"]
        head = log[-1]["position"]
        assert head - seed_head >= len(acknowledged)

        # A starts again on its data_dir, catches up, and both serve the same documents
        a.start(processes)
        ready_s = a.wait_ready()
        deadline = time.monotonic() + CONVERGE_PATIENCE_S
        started = time.monotonic()
        while True:
            states = [ready_state(a.port), ready_state(b.port)]
            if all(s is not None and s["head"] == head for s in states):
                on_a, on_b = documents(a.port), documents(b.port)
                if on_a == on_b and all(status == 200 for status, _, _ in on_a.values()):
                    break
            assert time.monotonic() < deadline, (
                f"A and B did not converge: {states}, "
                f"differing: {[p for p in FEEDS if documents(a.port)[p] != documents(b.port)[p]]}"
            )
            time.sleep(0.1)
        converge_s = time.monotonic() - started
        for path, (_, etag, body) in on_a.items():
            assert etag, path
            assert path.endswith(".atom") or path.endswith(".rss") or body.startswith(b"{")
        newest = json.loads(on_b["/feeds/all.json"][2])
        assert any(item["title"].startswith("Failover writer") for item in newest["items"]), (
            "the appended developments are not in the feed"
        )
        print(
            f"failover: {len(acknowledged)} acknowledged appends "
            f"({sum(1 for x in from_b if x.after_kill and x.status in (200, 201))} by B after "
            f"the kill), lost 0, "
            f"{len(load.reads)} reads from B, A ready again in {ready_s:.2f} s, "
            f"converged {converge_s:.2f} s later at position {head}"
        )
        # a clean stop of both logs no error
        for replica in (a, b):
            assert replica.process is not None
            _stop(replica.process)
            text = replica.log_text()
            assert replica.process.returncode == 0, text[-3000:]
            assert "Traceback" not in text and " ERROR " not in text, text[-3000:]
