"""The deployment files, checked as far as a machine without Docker can.

docker-compose.yml, the Dockerfile and .dockerignore are read as Docker reads them and
checked against each other, against the repository and against the settings the
container will load: every path they name exists and reaches the image, the mounted
config puts the log on the volume and listens on the published port, the health checks
ask the service's own health route, and the container's exact command (paths mapped to
the repository) serves, passes both health checks and stops cleanly on SIGTERM well
within the stop grace period.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from feedsvc.settings import Settings
from feedsvc.web.app import create_app
from tests.test_topology import (
    NGINX_CONF,
    SCALE_COMPOSE,
    environment,
    http_block,
    parse_nginx,
    published,
    replica_names,
    scale_compose,
    the_server,
)

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SERVICE = "feedsvc"
HEALTH_PATH = "/healthz"


# -- reading the files as Docker does ------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of the arguments, or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list)
        assert all(isinstance(v, str) for v in value)
        return [str(v) for v in value]


def dockerfile_stages(path: Path) -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per stage (continuations joined)."""
    stages: list[list[Instruction]] = []
    logical = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, "a Dockerfile must start with FROM"
        stages[-1].append(instruction)
        logical = ""
    assert not logical, "the Dockerfile ends inside a continued line"
    return stages


def ignore_patterns(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """The .dockerignore rules as (is_exception, regex), in file order."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        pattern = pattern.removeprefix("./")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((exception, re.compile(regex + r"\Z")))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves ``relative`` (a path in the build context) out.

    A rule matching a folder excludes everything inside it; the last rule that
    matches the path or one of its folders decides.
    """
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for exception, regex in rules:
        if any(regex.match(c) for c in candidates):
            verdict = not exception
    return verdict


def compose_service() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml must be a mapping"
    services = document.get("services")
    assert isinstance(services, dict) and SERVICE in services, f"no service {SERVICE!r}"
    service = services[SERVICE]
    assert isinstance(service, dict)
    return service


def compose_document() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    """The service's volumes, short or long syntax."""
    found: list[Mount] = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target, *mode = entry.split(":")
            found.append(Mount(source, target, "ro" in ",".join(mode).split(",")))
        else:
            found.append(
                Mount(str(entry["source"]), str(entry["target"]), bool(entry.get("read_only")))
            )
    return found


@dataclass(frozen=True)
class Port:
    host: int
    container: int


def published_ports(service: dict[str, Any]) -> list[Port]:
    """The service's published ports, short or long syntax."""
    found: list[Port] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            found.append(Port(int(entry["published"]), int(entry["target"])))
            continue
        text = str(entry).split("/")[0]
        *_, host, container = text.split(":")
        assert "-" not in host and "-" not in container, "port ranges are not expected"
        found.append(Port(int(host), int(container)))
    return found


def duration_s(value: object) -> float:
    """A compose duration (``45s``, ``1m30s``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    text = str(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# -- what the files say, resolved -----------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    service: dict[str, Any]
    context: Path
    dockerfile: Path
    runtime: list[Instruction]
    rules: list[tuple[bool, re.Pattern[str]]]

    def instructions(self, keyword: str) -> list[Instruction]:
        return [i for i in self.runtime if i.keyword == keyword]

    def command(self) -> list[str]:
        """What the container runs: compose's command, else the image's CMD."""
        command = self.service.get("command")
        if command is not None:
            return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        cmds = self.instructions("CMD")
        assert cmds, "the Dockerfile has no CMD"
        argv = cmds[-1].exec_form()
        assert argv is not None, (
            "CMD must be in exec form (a JSON array): in shell form /bin/sh is PID 1 and "
            "swallows SIGTERM, so `docker stop` waits out the grace period and kills feedsvc"
        )
        return argv

    def config_argument(self) -> str:
        argv = self.command()
        assert "--config" in argv, f"the container command {argv} names no --config"
        return argv[argv.index("--config") + 1]

    def resolve_mounted(self, container_path: str) -> Path | None:
        """The repository path behind a container path, through compose's bind mounts."""
        path = PurePosixPath(container_path)
        for mount in mounts(self.service):
            target = PurePosixPath(mount.target)
            if mount.is_bind and (path == target or target in path.parents):
                return (COMPOSE.parent / mount.source / path.relative_to(target)).resolve()
        return None

    def resolve_copied(self, container_path: str) -> Path | None:
        """The build-context path the image's ``COPY`` puts at a container path."""
        path = PurePosixPath(container_path)
        workdir = PurePosixPath("/")
        found: Path | None = None
        for instruction in self.runtime:
            if instruction.keyword == "WORKDIR":
                workdir = workdir / instruction.args
            if instruction.keyword != "COPY" or "--from" in instruction.args:
                continue
            *sources, dest = instruction.args.split()
            assert len(sources) == 1, "one source per COPY keeps the mapping plain"
            target = workdir / dest
            if path == target or target in path.parents:
                found = (self.context / sources[0] / path.relative_to(target)).resolve()
        return found

    def in_context(self, path: Path) -> bool:
        """Whether ``path`` is inside the build context and not left out of it."""
        try:
            relative = path.resolve().relative_to(self.context)
        except ValueError:
            return False
        return not ignored(relative.as_posix(), self.rules)


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    service = compose_service()
    build = service.get("build")
    assert build is not None, "the service must be built from this repository"
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context.is_dir(), f"build context {context} does not exist"
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    assert dockerfile.is_file(), f"{dockerfile} does not exist"
    ignore_file = context / ".dockerignore"
    assert ignore_file.is_file(), "no .dockerignore: the whole repository, .venv included, is sent"
    stages = dockerfile_stages(dockerfile)
    return Deployment(service, context, dockerfile, stages[-1], ignore_patterns(ignore_file))


@pytest.fixture(scope="module")
def config_file(deployment: Deployment) -> Path:
    """The config file the container loads, in the repository (through the mount)."""
    inside = deployment.config_argument()
    path = deployment.resolve_mounted(inside)
    assert path is not None, f"the config {inside} is not under a mount of docker-compose.yml"
    assert path.is_file(), f"the container's config {inside} would be {path}, which does not exist"
    return path


@pytest.fixture(scope="module")
def settings(config_file: Path) -> Settings:
    assert config_file == (ROOT / "config" / "docker.toml").resolve()
    return Settings.load(config_file, environ={})


def healthchecks(deployment: Deployment) -> dict[str, list[str]]:
    """The Dockerfile's and compose's health check commands (CMD form, no ``CMD``)."""
    checks: dict[str, list[str]] = {}
    instructions = deployment.instructions("HEALTHCHECK")
    assert instructions, "the Dockerfile has no HEALTHCHECK"
    text = instructions[-1].args
    assert " CMD " in f" {text} ", f"HEALTHCHECK without CMD: {text}"
    argv = Instruction("CMD", text.split("CMD", 1)[1]).exec_form()
    assert argv is not None, "HEALTHCHECK CMD should be exec form"
    checks["Dockerfile"] = argv
    compose = deployment.service.get("healthcheck")
    assert isinstance(compose, dict), "docker-compose.yml: the service has no healthcheck"
    test = compose.get("test")
    assert isinstance(test, list) and test[0] == "CMD", f"compose healthcheck test: {test!r}"
    checks["docker-compose.yml"] = [str(t) for t in test[1:]]
    return checks


def health_url(argv: list[str]) -> str:
    assert argv[:2] == ["python", "-c"], f"a health check runs python -c, not {argv}"
    urls = re.findall(r"https?://[^'\"\s]+", argv[2])
    assert len(urls) == 1, f"one URL expected in the health check, found {urls}"
    return str(urls[0])


# -- the checks ---------------------------------------------------------------------------


def test_compose_names_only_files_that_exist(deployment: Deployment, config_file: Path) -> None:
    for mount in mounts(deployment.service):
        if mount.is_bind:
            source = (COMPOSE.parent / mount.source).resolve()
            assert source.exists(), f"bind mount source {mount.source} does not exist"
    assert config_file.is_relative_to(ROOT)


def test_data_lives_on_the_named_volume(deployment: Deployment, settings: Settings) -> None:
    by_target = {m.target: m for m in mounts(deployment.service)}
    data = by_target.get(str(settings.data_dir))
    assert data is not None, (
        f"data_dir {settings.data_dir} is not a mount: the log dies with the container"
    )
    assert data.source == "feedsvc-data" and not data.is_bind
    assert "feedsvc-data" in (compose_document().get("volumes") or {}), "volume not declared"
    assert settings.data_dir == Path("/data")
    assert settings.database_path.parent == Path(data.target)


def test_config_is_mounted_read_only(deployment: Deployment) -> None:
    config = next((m for m in mounts(deployment.service) if m.target == "/app/config"), None)
    assert config is not None and config.is_bind and config.read_only
    assert (COMPOSE.parent / config.source).resolve() == ROOT / "config"


def test_service_listens_where_it_is_published(deployment: Deployment, settings: Settings) -> None:
    ports = published_ports(deployment.service)
    assert [p.container for p in ports] == [settings.http_port], (
        f"published {ports} but the config listens on {settings.http_port}"
    )
    # a container listening on 127.0.0.1 cannot be reached through a published port
    assert settings.http_host == "0.0.0.0"
    exposed = [
        int(p.split("/")[0]) for i in deployment.instructions("EXPOSE") for p in i.args.split()
    ]
    assert settings.http_port in exposed
    # feeds link to public_base_url: it must be where the port is published
    base = urlsplit(settings.public_base_url)
    assert base.port == ports[0].host, f"{settings.public_base_url} is not the published port"


def test_image_and_compose_load_the_same_config(deployment: Deployment, config_file: Path) -> None:
    """Run without compose's mount, the image still has the config its CMD names."""
    copied = deployment.resolve_copied(deployment.config_argument())
    assert copied is not None, "the image has no COPY of the config its CMD names"
    assert copied == config_file
    assert deployment.in_context(copied), f"{copied} is left out by .dockerignore"


def test_seed_story_is_in_the_image(deployment: Deployment, settings: Settings) -> None:
    assert settings.seed is not None
    source = deployment.resolve_copied(str(settings.seed))
    assert source is not None, f"the image has no COPY providing the seed {settings.seed}"
    assert source.is_file(), f"seed {settings.seed} would come from {source}, which does not exist"
    assert deployment.in_context(source), f"{source} is left out by .dockerignore"


def test_health_checks_ask_the_health_route(deployment: Deployment, settings: Settings) -> None:
    routes = {
        (r.method, r.resource.canonical)
        for r in create_app(settings).router.routes()
        if r.resource is not None
    }
    assert ("GET", HEALTH_PATH) in routes
    for where, argv in healthchecks(deployment).items():
        url = urlsplit(health_url(argv))
        assert url.path == HEALTH_PATH, f"{where} asks {url.path}"
        assert url.hostname in ("127.0.0.1", "localhost"), f"{where} asks {url.hostname}"
        assert url.port == settings.http_port, f"{where} asks port {url.port}"


def test_image_runs_as_a_user_who_owns_the_data(deployment: Deployment, settings: Settings) -> None:
    froms = [i.args for i in dockerfile_stages(deployment.dockerfile)[-1] if i.keyword == "FROM"]
    assert froms[0].split()[0] == "python:3.11-slim"
    users = deployment.instructions("USER")
    assert users, "the image runs as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    chowned = False
    for run in deployment.instructions("RUN"):
        for command in re.split(r"&&|;", run.args):
            words = command.split()
            if words[:1] == ["chown"] and str(settings.data_dir) in words:
                owner = next(w for w in words[1:] if not w.startswith("-"))
                chowned = chowned or owner.split(":")[0] == user
    assert chowned, f"{settings.data_dir} is not owned by {user}: the new volume is read-only to it"
    assert any("pip install" in i.args for i in deployment.instructions("RUN"))


def test_dockerignore_keeps_out_venv_and_data_but_not_the_build(deployment: Deployment) -> None:
    left_out = [".venv", ".venv/bin/python", "data", "data/feedsvc.sqlite3", ".git/HEAD"]
    left_out += ["config/feedsvc.sqlite3", "feedsvc/__pycache__/cli.cpython-311.pyc"]
    for name in left_out:
        assert ignored(name, deployment.rules), f"{name} would be sent to the Docker daemon"
    needed = [ROOT / "pyproject.toml", *sorted((ROOT / "feedsvc").rglob("*.py"))]
    needed += [ROOT / "feedsvc" / "py.typed", ROOT / "README.md"]
    for path in needed:
        if path.exists():
            assert deployment.in_context(path), f"{path} is needed to build but left out"


def test_restart_and_stop_policy(deployment: Deployment, settings: Settings) -> None:
    assert deployment.service.get("restart") == "on-failure"
    assert deployment.service.get("stop_signal", "SIGTERM") == "SIGTERM"
    grace = duration_s(deployment.service.get("stop_grace_period", "10s"))
    # a long-poll in flight may take max_wait_s; Docker must not kill feedsvc before it ends
    assert grace > settings.max_wait_s, f"stop_grace_period {grace}s ≤ max_wait_s"


# -- the scale-out file: docker-compose.scale.yml --------------------------------------


@pytest.fixture(scope="module")
def scale() -> dict[str, Any]:
    """docker-compose.scale.yml, as compose reads it (merge keys resolved)."""
    return scale_compose()


def replica_settings(scale: dict[str, Any], name: str, config_file: Path) -> Settings:
    """What a replica loads: the container's config file, then its environment."""
    return Settings.load(config_file, environ=environment(scale["services"][name]))


def test_plain_compose_up_is_still_the_single_sqlite_service(settings: Settings) -> None:
    document = compose_document()
    assert set(document["services"]) == {SERVICE}, "docker-compose.yml gained services"
    assert "profiles" not in document["services"][SERVICE]
    assert not settings.database_url and settings.store_url.startswith("sqlite:///")
    assert not environment(document["services"][SERVICE]).get("FEEDSVC_DATABASE_URL")


def test_replicas_are_the_image_and_command_of_the_single_service(
    deployment: Deployment, scale: dict[str, Any]
) -> None:
    names = replica_names(scale)
    assert len(names) == 2
    for name in names:
        replica = scale["services"][name]
        assert replica["build"] == deployment.service["build"], f"{name} builds another image"
        assert replica["image"] == deployment.service["image"]
        assert replica.get("command") is None, f"{name} overrides the image's command"
        config = next((m for m in mounts(replica) if m.target == "/app/config"), None)
        assert config is not None and config.is_bind and config.read_only
        assert (SCALE_COMPOSE.parent / config.source).resolve() == ROOT / "config"
        assert replica.get("restart") == "on-failure"
        assert replica.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert duration_s(replica.get("stop_grace_period", "10s")) > Settings().max_wait_s


def test_each_replica_keeps_its_read_model_on_its_own_volume(
    scale: dict[str, Any], config_file: Path
) -> None:
    volumes = []
    for name in replica_names(scale):
        settings = replica_settings(scale, name, config_file)
        by_target = {m.target: m for m in mounts(scale["services"][name])}
        data = by_target.get(str(settings.data_dir))
        assert data is not None and not data.is_bind, f"{name}: data_dir is not a named volume"
        assert data.source in (scale.get("volumes") or {}), f"{name}: {data.source} undeclared"
        volumes.append(data.source)
    assert len(set(volumes)) == len(volumes), f"replicas share a read model volume: {volumes}"


def test_replicas_keep_the_log_in_the_postgres_service(
    scale: dict[str, Any], config_file: Path
) -> None:
    services = scale["services"]
    for name in replica_names(scale):
        settings = replica_settings(scale, name, config_file)
        url = urlsplit(settings.store_url)
        assert url.scheme == "postgresql", f"{name}: the log is at {settings.store_url}"
        assert url.hostname in services, f"{name}: {url.hostname} is not a service"
        database = services[url.hostname]
        assert str(database["image"]).startswith("postgres:")
        assert (url.port or 5432) == 5432
        env = environment(database)
        assert url.path.lstrip("/") == env.get("POSTGRES_DB", env.get("POSTGRES_USER"))
        assert url.username == env.get("POSTGRES_USER", "postgres")
        assert url.password or env.get("POSTGRES_HOST_AUTH_METHOD") == "trust", (
            f"{name} gives no password and the database asks for one"
        )
        depends = services[name].get("depends_on") or {}
        assert depends.get(url.hostname, {}).get("condition") == "service_healthy"


def test_nginx_reaches_the_replicas_where_they_listen_and_they_link_to_it(
    scale: dict[str, Any], config_file: Path
) -> None:
    conf = parse_nginx(NGINX_CONF.read_text(encoding="utf-8"))
    upstream = http_block(conf).children("upstream")[0]
    servers = {d.args[0] for d in upstream.children("server")}
    proxy = scale["services"]["nginx"]
    listen = int(the_server(conf).children("listen")[0].args[0])
    host_port = published(proxy)[listen]
    for name in replica_names(scale):
        settings = replica_settings(scale, name, config_file)
        assert f"{name}:{settings.http_port}" in servers, f"nginx does not reach {name}"
        assert settings.http_host == "0.0.0.0"
        assert urlsplit(settings.public_base_url).port == host_port, (
            f"{name} links to {settings.public_base_url}, readers reach nginx on {host_port}"
        )


def test_replica_health_checks_ask_the_readiness_route(
    scale: dict[str, Any], config_file: Path
) -> None:
    for name in replica_names(scale):
        settings = replica_settings(scale, name, config_file)
        routes = {
            (r.method, r.resource.canonical)
            for r in create_app(settings).router.routes()
            if r.resource is not None
        }
        test = scale["services"][name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        url = urlsplit(health_url([str(t) for t in test[1:]]))
        assert ("GET", url.path) in routes and url.path == "/readyz"
        assert url.hostname in ("127.0.0.1", "localhost") and url.port == settings.http_port


# -- the container's command, run here ------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_check(argv: list[str], port: int, settings: Settings) -> int:
    """Run a health check as the container would, but against ``port``."""
    code = argv[2].replace(f":{settings.http_port}/", f":{port}/")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=30, check=False
    )
    return done.returncode


@pytest.fixture
def server(
    deployment: Deployment, settings: Settings, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The container's command, paths mapped to the repository and a free port.

    The program is run through the package's own entry point (the one pip installs as
    that console script in the image), from the repository, so the code under test is
    this checkout whatever state the local virtualenv's install is in.
    """
    argv = deployment.command()
    with open(ROOT / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert argv[0] in scripts, f"the image runs {argv[0]!r}, which pip does not install"
    module, _, function = scripts[argv[0]].partition(":")
    launcher = f"import sys; from {module} import {function}; sys.exit({function}())"
    args = list(argv[1:])
    args[args.index("--config") + 1] = str(ROOT / "config" / "docker.toml")
    assert settings.seed is not None
    seed = deployment.resolve_copied(str(settings.seed))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDSVC_")}
    env |= {
        "FEEDSVC_DATA_DIR": str(tmp_path / "data"),
        "FEEDSVC_HTTP_PORT": str(port),
        "FEEDSVC_SEED": str(seed),
    }
    (tmp_path / "data").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_container_command_serves_passes_health_checks_and_stops_on_sigterm(
    deployment: Deployment,
    settings: Settings,
    server: tuple[subprocess.Popen[bytes], int],
    tmp_path: Path,
) -> None:
    process, port = server
    checks = healthchecks(deployment)
    start_period = duration_s(deployment.service["healthcheck"].get("start_period", "0s"))
    deadline = time.monotonic() + min(start_period, 20.0)
    while run_check(checks["Dockerfile"], port, settings) != 0:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        assert time.monotonic() < deadline, "not healthy within the start period"
        time.sleep(0.2)
    assert run_check(checks["docker-compose.yml"], port, settings) == 0
    assert (tmp_path / "data" / settings.database).is_file(), "the log is not in data_dir"

    process.send_signal(signal.SIGTERM)
    grace = duration_s(deployment.service.get("stop_grace_period", "10s"))
    started = time.monotonic()
    status = process.wait(timeout=grace)
    assert status == 0, f"exit status {status} on SIGTERM: compose's on-failure would restart it"
    assert time.monotonic() - started < 10, "a SIGTERM with nothing in flight took too long"
    # and a service that is down is reported unhealthy
    for argv in checks.values():
        assert run_check(argv, port, settings) != 0
