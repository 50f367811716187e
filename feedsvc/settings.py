"""The one settings object.

Declared once, with defaults and help; loaded from a TOML file (``config/*.toml``)
and then ``FEEDSVC_*`` environment variables (``FEEDSVC_HTTP_PORT=8081`` sets
``http_port``); passed in to whatever needs it. Nothing else reads ``os.environ``.

``public_base_url`` left empty follows the listening address: it is resolved once,
here, to ``http://{http_host}:{http_port}`` (``localhost`` for a wildcard host), so
everything else reads ``settings.public_base_url`` and finds an absolute URL.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from feedsvc.errors import ConfigError


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """Every knob feedsvc has. Relative paths are relative to the working directory."""

    data_dir: Path = _setting(Path("data"), "folder for the database and the admin token")
    database: str = _setting("feedsvc.sqlite3", "SQLite file name, inside data_dir")
    database_url: str = _setting(
        "",
        "where the log is: sqlite:///PATH (an SQLite file) or postgresql://USER@HOST:PORT/DB; "
        "empty: the SQLite file data_dir/database",
    )
    seed: Path | None = _setting(
        Path("events/seed/ct-doj-1373.ndjson"),
        "NDJSON log imported on first start (empty to skip)",
    )
    http_host: str = _setting("127.0.0.1", "address to listen on")
    http_port: int = _setting(8080, "port to listen on")
    public_base_url: str = _setting(
        "",
        "absolute base of every URL in feeds and pages, where readers reach the service "
        "(e.g. https://news.example.org); empty: http://<http_host>:<http_port>, with "
        "localhost for a wildcard http_host (0.0.0.0 or ::), which no link can point at",
    )
    synchronous: str = _setting("FULL", "SQLite synchronous pragma: FULL or NORMAL")
    busy_timeout_ms: int = _setting(5000, "how long to wait for a locked database")
    readers: int = _setting(2, "read connections to the database")
    max_group_commit: int = _setting(2000, "most events written in one group-commit transaction")
    feed_size: int = _setting(50, "entries per feed document and archive page")
    cache_max_age: int = _setting(60, "Cache-Control max-age of feeds and pages, seconds")
    catchup_interval_s: float = _setting(5.0, "safety-net interval of the projection catch-up")
    rebuild_cron: str = _setting("", "crontab of full projection rebuilds (empty: never)")
    max_body_bytes: int = _setting(1_048_576, "largest request body accepted")
    max_events_per_request: int = _setting(1000, "most events in one append request")
    max_page_size: int = _setting(1000, "largest page of the log one read returns")
    max_wait_s: float = _setting(30.0, "longest long-poll wait")
    future_skew_s: float = _setting(86_400.0, "how far in the future occurred_at may be, seconds")
    token_rate_per_s: float = _setting(200.0, "appends per second one token may make")
    token_burst: int = _setting(400, "burst of appends above the rate")
    ready_max_lag: int = _setting(1000, "projection lag, in events, above which /readyz fails")
    sse_heartbeat_s: float = _setting(15.0, "SSE heartbeat interval, seconds")
    sse_queue: int = _setting(1000, "events buffered per SSE client before it is dropped")
    log_level: str = _setting("INFO", "log level: DEBUG, INFO, WARNING, ERROR")
    log_json: bool = _setting(True, "structured JSON logs (false: plain text)")
    public_base_url_derived: bool = field(default=False, init=False)
    """True when ``public_base_url`` was not set and follows ``http_host`` and
    ``http_port``; False when it was set explicitly (config file, environment or
    argument)."""

    def __post_init__(self) -> None:
        if not self.public_base_url:
            object.__setattr__(self, "public_base_url", listening_url(self))
            object.__setattr__(self, "public_base_url_derived", True)

    @property
    def store_url(self) -> str:
        """``database_url``, or the default SQLite file's URL when it is empty."""
        return self.database_url or f"sqlite:///{self.data_dir / self.database}"

    @property
    def database_path(self) -> Path:
        """The SQLite file (of ``database_url`` when it names one)."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return self.data_dir / self.database

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Load from a TOML file (if given), then ``FEEDSVC_*`` variables, then
        keyword overrides. Unknown keys and bad values raise :class:`ConfigError`."""
        values: dict[str, Any] = {}
        base = Path.cwd()
        if path is not None:
            try:
                with open(path, "rb") as f:
                    values.update(tomllib.load(f))
            except OSError as e:
                raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
        env = os.environ if environ is None else environ
        for name in _names():
            key = f"FEEDSVC_{name.upper()}"
            if key in env:
                values[name] = env[key]
        values.update(overrides)
        return cls._build(values, base)

    @classmethod
    def _build(cls, values: dict[str, Any], base: Path) -> Settings:
        known = {f.name: f for f in fields(cls) if f.init}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        typed: dict[str, Any] = {}
        for name, value in values.items():
            default = known[name].default
            typed[name] = _coerce(name, value, default, base)
        settings = cls(**typed)
        if settings.synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError("synchronous must be FULL, NORMAL or EXTRA")
        if not settings.public_base_url.startswith(("http://", "https://")):
            raise ConfigError("public_base_url must be an absolute http(s) URL")
        if settings.database_url and not settings.database_url.startswith(
            ("sqlite:///", "postgresql://", "postgres://")
        ):
            raise ConfigError(
                "database_url must start with sqlite:/// (a file) or postgresql:// "
                f"(a server), not {settings.database_url!r}"
            )
        if settings.feed_size < 1:
            raise ConfigError("feed_size must be at least 1")
        return settings

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed. A derived ``public_base_url`` is derived
        again (it follows a changed ``http_host`` or ``http_port``)."""
        if self.public_base_url_derived and "public_base_url" not in changes:
            changes["public_base_url"] = ""
        return dataclasses.replace(self, **changes)


def _coerce(name: str, value: Any, default: Any, base: Path) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, Path) or name in ("seed",):
            if value in ("", None):
                return None
            p = Path(value)
            return p if p.is_absolute() else base / p
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting {name}: {value!r} is not a valid {type(default).__name__}"
        ) from None


WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
"""Listening addresses that mean "every interface": no link can point at them."""


def listening_url(settings: Settings) -> str:
    """``http://{http_host}:{http_port}``, the base URL a derived ``public_base_url``
    takes: ``localhost`` for a wildcard host, an IPv6 address in brackets."""
    host = settings.http_host.strip()
    if host in WILDCARD_HOSTS:
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}"


def _names() -> list[str]:
    """The names of the settings one may set (file, environment, arguments)."""
    return [f.name for f in fields(Settings) if f.init]


def describe() -> list[tuple[str, Any, str]]:
    """Every setting with its default and help, for ``--help`` and the README."""
    return [(f.name, f.default, f.metadata["help"]) for f in fields(Settings) if f.init]
