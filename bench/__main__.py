"""``python -m bench [--quick] [--only NAME[,NAME]]``: run the benchmarks in bench/ and
print the results.

A whole run rewrites bench/RESULTS.md; a run with ``--only`` replaces just the sections
of the benchmarks it ran (each marked with the date and the command) and keeps the rest,
so the file still holds every figure beside its same-run baseline.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import pkgutil
import re
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

_SECTION = re.compile(r"^== bench\.(\w+) ==\n", re.M)
_TRAILER = re.compile(r"\nall benchmarks took [^\n]*\n$")
_FENCE = "```text\n"


def results_document(command: str, output: str) -> str:
    """bench/RESULTS.md holding ``output``, everything ``command`` printed."""
    return (
        "# feedsvc benchmark results\n\n"
        f"Written by `{command}` (see bench/README.md for what each figure means and "
        "bench/ANALYSIS.md for what the profiles showed). Every figure is beside a baseline "
        "measured in the same run; medians of the runs with [min–max]. A section marked "
        "`updated … by python -m bench --only …` was run again alone, later, and carries "
        "its own description of the machine.\n\n" + _FENCE + output + "```\n"
    )


def replace_sections(document: str, sections: dict[str, str]) -> str:
    """``document`` (bench/RESULTS.md) with the ``== bench.NAME ==`` section of each
    name in ``sections`` replaced by its new text (added, in name order, when absent);
    every other section, and the text before and after them, kept as it was."""
    start = document.find(_FENCE)
    # the fence that closes the run's output: sections written by hand may follow it
    close = document.find("\n```\n", start + len(_FENCE)) if start >= 0 else -1
    end = close + 1 if close >= 0 else -1
    if start < 0 or end <= start:
        return document.rstrip("\n") + "\n\n" + _FENCE + "".join(sections.values()) + "```\n"
    head = document[: start + len(_FENCE)]
    body, tail = document[start + len(_FENCE) : end], document[end:]
    trailer = _TRAILER.search(body)
    if trailer is not None:
        body = body[: trailer.start()] + "\n"
    marks = list(_SECTION.finditer(body))
    preamble = body[: marks[0].start()] if marks else body
    found = {
        m.group(1): body[m.start() : marks[i + 1].start() if i + 1 < len(marks) else len(body)]
        for i, m in enumerate(marks)
    }
    found |= sections
    joined = "\n".join(found[name].rstrip("\n") + "\n" for name in sorted(found))
    after = "\n" + trailer.group(0).lstrip("\n") if trailer is not None else ""
    return head + preamble + joined + after + tail


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("Run the feedsvc benchmarks and print the results.", argv)
    found = benchmarks()
    chosen = found
    if args.only:
        names = {name for name, _ in found}
        unknown = [n for n in args.only if n not in names]
        if unknown:
            print(f"no benchmark called {', '.join(unknown)}; there are {', '.join(sorted(names))}")
            return 2
        chosen = [(name, module) for name, module in found if name in args.only]
    command = (
        "python -m bench"
        + (" --quick" if args.quick else "")
        + (f" --only {','.join(args.only)}" if args.only else "")
    )
    started = time.monotonic()
    tee = _Tee(sys.stdout)
    sections: dict[str, str] = {}
    with contextlib.redirect_stdout(tee):
        if not args.only:
            print("feedsvc benchmarks" + (" (quick)" if args.quick else ""))
            for line in machine_lines(Path(tempfile.gettempdir())):
                print(f"  {line}")
        for name, module in chosen:
            begin = len(tee.copy.getvalue())
            print(f"\n== bench.{name} ==")
            if args.only:
                when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
                print(f"(updated {when} by `{command}`)")
            module.run(args.quick, show_machine=bool(args.only))
            sections[name] = tee.copy.getvalue()[begin:].lstrip("\n")
        print(f"\nall benchmarks took {time.monotonic() - started:.0f} s")
    if args.only and RESULTS.exists():
        RESULTS.write_text(
            replace_sections(RESULTS.read_text(encoding="utf-8"), sections), encoding="utf-8"
        )
    else:
        RESULTS.write_text(results_document(command, tee.copy.getvalue()), encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
