"""What every benchmark shares: the machine's description, repeated runs, tables, py-spy."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

RUNS = 3
"""Runs of every measurement; the median is reported with the min and max."""


@dataclass(frozen=True)
class Spread:
    """Several runs of one rate: the median, and the slowest and fastest run."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)

    def show(self) -> str:
        """``12,345 [11,900–12,800]``."""
        return f"{self.median:,.0f} [{self.low:,.0f}–{self.high:,.0f}]"


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts: a smoke run in seconds"
    )
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
        default=None,
        help="run only these benchmarks (bench.NAME) and update only their sections of "
        "bench/RESULTS.md",
    )
    return parser.parse_args(argv)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cores() -> str:
    """Logical CPUs of the machine and how many this process may use."""
    total = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return f"{total} logical" + ("" if usable == total else f", {usable} usable by this process")


def load() -> str:
    """The load averages, or ``unknown``."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def filesystem_of(path: Path) -> str:
    """The file system ``path`` is on, from /proc/mounts: fsync costs depend on it."""
    best = ("", "unknown", "")
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                device, mount, kind = fields[0], fields[1], fields[2]
                resolved = str(path.resolve())
                inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[0]):
                    best = (mount, kind, device)
    except OSError:
        return "unknown"
    mount, kind, device = best
    return f"{kind} ({device} on {mount})" if mount else kind


def machine_lines(temp_dir: Path) -> list[str]:
    """How and where a benchmark ran, one ``name: value`` line each."""
    return [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"python: {platform.python_implementation()} {platform.python_version()}",
        f"sqlite: {sqlite3.sqlite_version}",
        f"os: {platform.system()} {platform.release()} ({platform.machine()})",
        f"cpu: {cpu_model()}",
        f"cores: {cores()}",
        f"load average at start: {load()} (1, 5, 15 min; other work skews the figures)",
        f"databases in: {temp_dir} on {filesystem_of(temp_dir)}",
    ]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def py_spy() -> str | None:
    """The py-spy profiler: on PATH, or beside this Python (None when neither)."""
    found = shutil.which("py-spy")
    local = Path(sys.executable).with_name("py-spy")
    return found or (str(local) if local.exists() else None)
