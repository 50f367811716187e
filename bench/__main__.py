"""``python -m bench [--quick]``: run every benchmark in bench/ and print the results."""

from __future__ import annotations

import contextlib
import importlib
import io
import pkgutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TextIO, cast

import bench
from bench.common import machine_lines, parse_args

NOT_BENCHMARKS = {"common", "servers", "bare"}  # bare: a process bench.api and bench.feeds start


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


class _Tee(io.TextIOBase):
    """Write to the terminal and keep a copy for bench/RESULTS.md."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.out.write(text)
        self.out.flush()
        return self.copy.write(text)


RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("Run every feedsvc benchmark and print the results.", argv)
    command = "python -m bench" + (" --quick" if args.quick else "")
    started = time.monotonic()
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        print("feedsvc benchmarks" + (" (quick)" if args.quick else ""))
        for line in machine_lines(Path(tempfile.gettempdir())):
            print(f"  {line}")
        for name, module in benchmarks():
            print(f"\n== bench.{name} ==")
            module.run(args.quick, show_machine=False)
        print(f"\nall benchmarks took {time.monotonic() - started:.0f} s")
    RESULTS.write_text(
        "# feedsvc benchmark results\n\n"
        f"Written by `{command}` (see bench/README.md for what each figure means and "
        "bench/ANALYSIS.md for what the profiles showed). Every figure is beside a baseline "
        "measured in the same run; medians of the runs with [min–max].\n\n"
        "```text\n" + tee.copy.getvalue() + "```\n",
        encoding="utf-8",
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
