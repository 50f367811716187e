"""``python -m bench [--quick]``: run every benchmark in bench/ and print the results."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

import bench
from bench.common import machine_lines, parse_args

NOT_BENCHMARKS = {"common", "server_bare"}  # server_bare: a process bench.feeds starts


class Benchmark(Protocol):
    def run(self, quick: bool, *, show_machine: bool = True) -> None: ...


def benchmarks() -> list[tuple[str, Benchmark]]:
    """Every benchmark module of the package, by name."""
    found: list[tuple[str, Benchmark]] = []
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in NOT_BENCHMARKS or info.ispkg:
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if callable(getattr(module, "run", None)):
            found.append((info.name, cast(Benchmark, module)))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("Run every feedsvc benchmark and print the results.", argv)
    print("feedsvc benchmarks" + (" (quick)" if args.quick else ""))
    for line in machine_lines(Path(tempfile.gettempdir())):
        print(f"  {line}")
    for name, module in benchmarks():
        print(f"\n== bench.{name} ==")
        module.run(args.quick, show_machine=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
