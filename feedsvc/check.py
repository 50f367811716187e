"""``feedsvc check``: verify the log keeps every invariant.

Positions gapless from 1, versions contiguous from 1 per stream, ``recorded_at``
never going back, ids unique, and every event valid against its type's schema and
its story's rules. Reads the log in pages, so it runs in bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from feedsvc.domain.events import RecordedEvent, validate_data
from feedsvc.errors import ValidationFailed
from feedsvc.store.port import EventStore


@dataclass
class CheckReport:
    """What ``check`` found."""

    events: int = 0
    streams: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the log is sound."""
        return not self.problems


async def check_log(
    store: EventStore,
    progress: Callable[[int], object] | None = None,
    max_problems: int = 100,
) -> CheckReport:
    """Read the whole log and report every broken invariant (up to ``max_problems``)."""
    report = CheckReport()
    versions: dict[str, int] = {}
    expected_position = 1
    last_recorded = ""

    def problem(event: RecordedEvent, text: str) -> None:
        if len(report.problems) < max_problems:
            report.problems.append(f"position {event.position} ({event.id}): {text}")

    after = 0
    while True:
        page = await store.read_all(after, 1000)
        if not page:
            break
        for event in page:
            report.events += 1
            if event.position != expected_position:
                problem(event, f"gap: expected position {expected_position}")
            expected_position = event.position + 1
            version = versions.get(event.stream, 0) + 1
            if event.version != version:
                problem(
                    event,
                    f"stream {event.stream!r} expected version {version}, found {event.version}",
                )
            versions[event.stream] = event.version
            if event.recorded_at < last_recorded:
                problem(event, f"recorded_at {event.recorded_at} goes back from {last_recorded}")
            last_recorded = max(last_recorded, event.recorded_at)
            try:
                validate_data(event.type, event.schema_version, event.data_only())
            except ValidationFailed as e:
                problem(event, str(e))
        after = page[-1].position
        if progress:
            progress(len(page))
    report.streams = len(versions)
    return report
