"""The ``feedsvc`` command: serve, import, export, check, rebuild, token.

Every command loads :class:`~feedsvc.settings.Settings` from ``--config`` (default
``config/feedsvc.toml`` when present) and ``FEEDSVC_*`` variables. A
:class:`~feedsvc.errors.FeedsvcError` ends the command with one clear line on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from feedsvc.auth import Scope
from feedsvc.check import check_log
from feedsvc.cli_support import tune_gc
from feedsvc.errors import FeedsvcError
from feedsvc.ndjson import read_ndjson
from feedsvc.projections.runner import ProjectionRunner
from feedsvc.settings import Settings
from feedsvc.store import make_coordinator, make_store, make_token_store

DEFAULT_CONFIG = Path("config/feedsvc.toml")


@contextmanager
def _progress(total: int | None, unit: str, desc: str) -> Iterator[tqdm[Any]]:
    bar = tqdm(total=total, unit=unit, desc=desc, disable=not sys.stderr.isatty(), leave=False)
    try:
        yield bar
    finally:
        bar.close()


async def import_file(settings: Settings, path: Path) -> tuple[int, int]:
    """Import an export file; return (events in file, events written)."""
    size = path.stat().st_size if path.exists() else None
    with _progress(size, "B", f"reading {path.name}") as bar:
        events = read_ndjson(path, bar.update)
    store = make_store(settings, create=True)
    if settings.data_dir.parent.is_dir():
        settings.data_dir.mkdir(exist_ok=True)
    await store.open()
    try:
        written = await store.import_events(events)
    finally:
        await store.close()
    return len(events), written


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    total, written = await import_file(settings, Path(args.file))
    print(
        f"imported {written} of {total} events from {args.file} ({total - written} already present)"
    )
    return 0


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    store = make_store(settings)
    await store.open()
    out: IO[bytes] = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
    try:
        after = args.after
        head = await store.head()
        with _progress(max(head - after, 0), "ev", "exporting") as bar:
            while True:
                page = await store.read_all(after, 1000)
                if not page:
                    break
                out.write(b"".join(e.to_json() + b"\n" for e in page))
                after = page[-1].position
                bar.update(len(page))
        out.flush()
    finally:
        if args.output:
            out.close()
        await store.close()
    return 0


async def _check(settings: Settings, args: argparse.Namespace) -> int:
    store = make_store(settings)
    await store.open()
    try:
        with _progress(await store.head(), "ev", "checking") as bar:
            report = await check_log(store, progress=bar.update)
    finally:
        await store.close()
    if report.ok:
        print(f"ok: {report.events} events in {report.streams} streams; the log is sound")
        return 0
    print(f"FAILED: {len(report.problems)} problem(s) in {report.events} events:", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


async def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    coordinator = make_coordinator(settings)
    if coordinator.broadcasts_rebuilds:
        # every replica keeps its own read model: each rebuilds it when told to
        await coordinator.open()
        try:
            await coordinator.announce_rebuild()
        finally:
            await coordinator.close()
        print("announced a rebuild: every running replica rebuilds its own read model")
        return 0
    store = make_store(settings)
    await store.open()
    runner = ProjectionRunner(store, settings)
    try:
        runner.open_current()
        with _progress(await store.head(), "ev", "rebuilding") as bar:
            position = await runner.rebuild(bar.update, in_server=False)
    finally:
        await runner.stop()
        await store.close()
    print(f"rebuilt every projection to position {position}; a running server switches to it")
    return 0


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from feedsvc.web.app import serve

    await serve(settings)
    return 0


# -- the `feedsvc token` command ----------------------------------------------------


def add_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``token create | list | revoke`` to the CLI."""
    p = sub.add_parser("token", help="create, list or revoke bearer tokens of the append API")
    actions = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="create a token and print it (shown only once)")
    c.add_argument("--name", required=True, help="a name for the token (appears as the actor)")
    c.add_argument(
        "--scope",
        required=True,
        help="admin | append:* | append:<slug>[,<slug>...]",
    )
    actions.add_parser("list", help="list tokens (names and scopes, never secrets)")
    r = actions.add_parser("revoke", help="revoke a token at once")
    r.add_argument("name", help="the token's name")


async def token_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``feedsvc token ...``: the secret goes to stdout, notes to stderr."""
    if settings.data_dir.parent.is_dir():
        settings.data_dir.mkdir(exist_ok=True)
    events = make_store(settings, create=True)
    await events.open()  # creates or migrates the database
    await events.close()
    tokens = make_token_store(settings)
    await tokens.open()
    try:
        if args.token_command == "create":
            secret = await tokens.create(args.name, Scope.parse(args.scope))
            print(secret, flush=True)
            print(
                f"token {args.name!r} ({Scope.parse(args.scope)}) created; "
                "store it now: it is not shown again",
                file=sys.stderr,
            )
        elif args.token_command == "list":
            rows = await tokens.list()
            if not rows:
                print("no tokens", file=sys.stderr)
            width = max([4, *(len(t.name) for t in rows)])
            if rows:
                print(f"{'NAME':<{width}}  {'SCOPE':<24}  {'CREATED':<27}  REVOKED")
            for t in rows:
                print(
                    f"{t.name:<{width}}  {t.scope!s:<24}  {t.created_at:<27}  {t.revoked_at or '-'}"
                )
        else:
            info = await tokens.revoke(args.name)
            print(f"token {info.name!r} revoked at {info.revoked_at}", file=sys.stderr)
    finally:
        await tokens.close()
    return 0


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "serve": _serve,
    "import": _import,
    "export": _export,
    "check": _check,
    "rebuild": _rebuild,
    "token": token_command,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="feedsvc", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"TOML settings file (default: {DEFAULT_CONFIG} if present)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the HTTP service (imports the seed story on first start)")
    p = sub.add_parser("import", help="import an NDJSON export file (idempotent)")
    p.add_argument("file", help="NDJSON file in the export format")
    p = sub.add_parser("export", help="write the log as NDJSON to stdout")
    p.add_argument(
        "--after", type=int, default=0, metavar="POSITION", help="only events after POSITION"
    )
    p.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
    sub.add_parser("check", help="verify the log's invariants; exit 1 if broken")
    sub.add_parser(
        "rebuild",
        help="rebuild every projection from the log into a fresh read model "
        "(on PostgreSQL: tell every running replica to rebuild its own)",
    )
    add_token_parser(sub)
    return parser


def load_settings(config: Path | None) -> Settings:
    """Settings from ``config`` (or the default file when present) and the environment."""
    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    return Settings.load(config)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``feedsvc`` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        tune_gc()
        return asyncio.run(COMMANDS[args.command](settings, args))
    except FeedsvcError as e:
        print(f"feedsvc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
