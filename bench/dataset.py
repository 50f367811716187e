"""A large, realistic event log for ``bench.scale``, generated once and cached.

Not a benchmark (it has no ``run``, so ``python -m bench`` skips it): ``bench.scale``
calls :func:`ensure`. ``python -m bench.dataset [--quick] [--check]`` builds (or finds)
one alone.

The log: ``stories`` stories and ``events`` events in all, interleaved the way a
newsroom writes them. Stories are opened one after another over the first half of the
log; every other event goes to a random story already open:

* ``development.reported`` (about half): a headline, a body of 300–2000 bytes of UTF-8,
  1–3 sources, 1–3 people, organisations, places and 1–3 topics drawn mostly from the
  story's own topics and otherwise from a pool of 40;
* ``quote.attributed`` (about a quarter), attached to one of the story's 20 most recent
  developments;
* occasional ``development.corrected`` (headline, body, topics or occurred_at),
  ``development.retracted``, ``followup.expected`` / ``followup.resolved``,
  ``story.retitled``, ``story.retagged``, ``story.closed`` / ``story.reopened``.

Every event keeps the story's rules (:class:`~feedsvc.domain.story.StoryRules` checks
each one as it is made) and its type's schema: the canonical JSON is built directly (in
model field order, as :func:`~feedsvc.domain.events.validate_new_event` would write it),
and the first events of every type and every 997th event are passed through
``validate_new_event`` and must come out byte for byte the same. ``recorded_at``
increases with the position. The rows go into a feedsvc database through
:meth:`SQLiteEventStore.import_events`, 10,000 per transaction.

The database is cached under ``bench/data/`` (git-ignored), named by the stories, the
events and :data:`GENERATOR_VERSION`; an existing file is reused. Bump the version when
the generator changes. A ``.json`` file beside it records how it was made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from feedsvc.check import check_log
from feedsvc.domain.events import CURRENT_VERSIONS, RecordedEvent, validate_new_event
from feedsvc.domain.story import StoryRules
from feedsvc.store.sqlite import SQLiteEventStore

GENERATOR_VERSION = 1
"""Part of the cache key: bump it whenever the events generated change."""
SEED = 20171012
DATA_DIR = Path(__file__).resolve().parent / "data"
CHUNK = 10_000
"""Events per import transaction."""
VALIDATE_FIRST = 50
"""The first events of every type are checked through validate_new_event ..."""
VALIDATE_EVERY = 997
"""... and every this-many-th event after that."""


@dataclass(frozen=True)
class Size:
    """How big a data set is."""

    stories: int
    events: int

    def describe(self) -> str:
        return f"{self.events:,} events over {self.stories:,} stories"


FULL = Size(stories=1_000, events=1_000_000)
QUICK = Size(stories=100, events=50_000)


@dataclass(frozen=True)
class Dataset:
    """A generated log on disk."""

    path: Path
    size: Size
    info: dict[str, Any]
    """What the ``.json`` beside it says: seconds taken, counts by type, bytes."""
    fresh: bool
    """Whether this call generated it (False: found in the cache)."""


def path_for(size: Size) -> Path:
    """Where the database of ``size`` is cached."""
    return DATA_DIR / f"log-s{size.stories}-e{size.events}-g{GENERATOR_VERSION}.sqlite3"


# -- vocabulary ---------------------------------------------------------------------------

_PROSE = (
    "the department of justice said on thursday that the state had shown no evidence of "
    "non-compliance with section 1373 and that its grant application would be reviewed "
    "the governor’s office welcomed the letter while the attorney general cautioned that "
    "further requests for information were pending from several cities officials said the "
    "decision followed months of correspondence about detainer requests from immigration "
    "and customs enforcement police chiefs told reporters that local departments honor "
    "judicial warrants not administrative requests a spokesperson for the mayor declined "
    "to comment on the timeline advocates rallied outside the capitol lawmakers from both "
    "parties questioned whether the act conflicts with federal law a federal judge had "
    "earlier blocked part of the executive order the council will take up the measure next "
    "week according to a draft agenda — résumé of the hearing was published by the clerk "
    "budget negotiators met late into the night as the deadline approached union leaders "
    "warned of layoffs and the school board postponed its vote on the contract residents "
    "packed the hearing room to testify about water rates and the utility’s filing the "
    "inspector general opened an inquiry into the procurement process at the agency"
)
_WORDS = _PROSE.split()
TOPICS = (
    "immigration", "federal grants", "sanctuary jurisdictions", "law enforcement",
    "courts", "state budget", "education", "public health", "housing", "transportation",
    "energy", "environment", "water", "elections", "campaign finance", "labor",
    "pensions", "taxes", "municipal finance", "policing", "corrections", "opioids",
    "hospitals", "insurance", "child welfare", "higher education", "climate",
    "agriculture", "tourism", "casinos", "cannabis", "broadband", "veterans",
    "civil rights", "open government", "ethics", "procurement", "public safety",
    "zoning", "weather",
)  # fmt: skip
_PEOPLE = tuple(
    (f"{first} {last}", role)
    for first, last, role in (
        ("Dannel", "Malloy", "Governor"),
        ("Jeff", "Sessions", "U.S. Attorney General"),
        ("Alan", "Hanson", "Acting Assistant Attorney General"),
        ("Luke", "Bronin", "Mayor of Hartford"),
        ("Toni", "Harp", "Mayor of New Haven"),
        ("George", "Jepsen", "Attorney General"),
        ("Kevin", "Lembo", "Comptroller"),
        ("Denise", "Merrill", "Secretary of the State"),
        ("Joe", "Aresimowicz", "House Speaker"),
        ("Martin", "Looney", "Senate President"),
        ("Len", "Fasano", "Senate Minority Leader"),
        ("Themis", "Klarides", "House Minority Leader"),
        ("Ben", "Barnes", "Budget Director"),
        ("Dianna", "Wentzell", "Education Commissioner"),
        ("Raul", "Pino", "Public Health Commissioner"),
        ("Scott", "Semple", "Correction Commissioner"),
        ("Dora", "Schriro", "Emergency Services Commissioner"),
        ("Joette", "Katz", "Children and Families Commissioner"),
        ("Évelyne", "Côté", "Spokesperson"),
        ("Ana", "Núñez", "Advocate"),
    )
)
_ORGS = (
    "U.S. Department of Justice", "Office of Justice Programs", "ICE", "ACLU",
    "Office of Policy and Management", "State Police", "Board of Education",
    "Department of Public Health", "Superior Court", "City Council", "Teachers’ Union",
    "Chamber of Commerce", "Public Utilities Regulatory Authority", "Office of Fiscal Analysis",
)  # fmt: skip
_PLACES = (
    "Connecticut", "Hartford", "New Haven", "Bridgeport", "Stamford", "Waterbury",
    "Norwalk", "Danbury", "New Britain", "Middletown", "New London", "Bristol",
    "Meriden", "West Hartford", "Greenwich", "Fairfield", "Hamden", "Manchester",
    "Washington", "New York",
)  # fmt: skip
_PUBLISHERS = (
    ("CT News Junkie", "ctnewsjunkie.com"),
    ("The Hartford Courant", "courant.com"),
    ("New Haven Register", "nhregister.com"),
    ("CT Mirror", "ctmirror.org"),
    ("WNPR", "wnpr.org"),
    ("Associated Press", "apnews.com"),
)
_KINDS = (
    "statement", "letter", "ruling", "law", "rally", "executive-action",
    "press-release", "announcement", "report", "other",
)  # fmt: skip


class _Text:
    """Cheap, varied prose: a fixed pool of random sentences, drawn from per body."""

    def __init__(self, rng: random.Random) -> None:
        self.sentences = [
            " ".join(rng.choices(_WORDS, k=rng.randint(6, 26))).capitalize() + "."
            for _ in range(4000)
        ]
        self.sizes = [len(s.encode()) + 1 for s in self.sentences]

    def body(self, rng: random.Random, low: int = 300, high: int = 2000) -> str:
        """Sentences until ``low``–``high`` bytes of UTF-8 (the target drawn uniformly)."""
        target = rng.randint(low, high)
        parts: list[str] = []
        size = 0
        count = len(self.sentences)
        while size < target:
            i = int(rng.random() * count)
            parts.append(self.sentences[i])
            size += self.sizes[i]
        text = " ".join(parts)
        if size > high:
            text = text.encode()[:high].decode(errors="ignore").rsplit(" ", 1)[0]
        return text

    def sentence(self, rng: random.Random) -> str:
        return self.sentences[int(rng.random() * len(self.sentences))]

    @staticmethod
    def headline(rng: random.Random) -> str:
        return " ".join(rng.choices(_WORDS, k=rng.randint(6, 14))).capitalize()


# -- the stories ---------------------------------------------------------------------------

_DAYS = [(date(2010, 1, 1) + timedelta(days=i)).isoformat() for i in range(365 * 12)]


@dataclass
class _Story:
    """What the generator remembers of one story to keep its rules."""

    slug: str
    topics: list[str]
    start_day: int
    rules: StoryRules = field(default_factory=StoryRules)
    version: int = 0
    developments: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    """development ids not retracted"""
    followups: list[str] = field(default_factory=list)
    """follow-ups expected and not resolved yet"""
    next_dev: int = 0
    next_quote: int = 0
    next_followup: int = 0
    closed: bool = False


class _Generator:
    """Makes the events one at a time: (stream, type, data dict, data JSON, ...)."""

    def __init__(self, size: Size, seed: int = SEED) -> None:
        self.size = size
        self.rng = random.Random(seed)
        self.text = _Text(random.Random(seed + 1))
        self.stories: list[_Story] = []
        self.open_at = [int(i * (size.events / 2) / size.stories) for i in range(size.stories)]
        self.recorded = datetime(2018, 1, 2, 9, 0, tzinfo=UTC)
        self.counts: Counter[str] = Counter()
        self.validated = 0
        self.data_bytes = 0

    # the envelope ---------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _occurred(self, story: _Story) -> str:
        rng = self.rng
        day = _DAYS[
            min(story.start_day + story.next_dev // 3 + rng.randint(-20, 5), len(_DAYS) - 1)
        ]
        roll = rng.random()
        if roll < 0.10:
            return f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
        if roll < 0.13:
            return day[:7]
        if roll < 0.14:
            return day[:4]
        return day

    # the data of each type, in model field order ---------------------------------------

    def _sources(self, dev_id: str, headline: str) -> list[dict[str, Any]]:
        rng = self.rng
        out = []
        for k in range(rng.randint(1, 3)):
            publisher, domain = rng.choice(_PUBLISHERS)
            out.append(
                {
                    "url": f"https://www.{domain}/2017/10/{dev_id}-{k}",
                    "title": headline if k == 0 else self.text.headline(rng),
                    "publisher": publisher,
                }
            )
        return out

    def _people(self) -> list[dict[str, Any]]:
        return [{"name": n, "role": r} for n, r in self.rng.sample(_PEOPLE, self.rng.randint(1, 3))]

    def _dev_topics(self, story: _Story) -> list[str]:
        rng = self.rng
        topics = rng.sample(story.topics, min(len(story.topics), rng.randint(1, 2)))
        if rng.random() < 0.3:
            extra = rng.choice(TOPICS)
            if extra not in topics:
                topics.append(extra)
        return topics

    def opened(self, story: _Story) -> dict[str, Any]:
        return {
            "slug": story.slug,
            "title": self.text.headline(self.rng),
            "summary": self.text.body(self.rng, 200, 600),
            "topics": list(story.topics),
            "places": self.rng.sample(_PLACES, 2),
        }

    def reported(self, story: _Story) -> dict[str, Any]:
        rng = self.rng
        dev_id = f"dev-{story.next_dev:05d}"
        story.next_dev += 1
        headline = self.text.headline(rng)
        data = {
            "development_id": dev_id,
            "headline": headline,
            "body": self.text.body(rng),
            "kind": rng.choice(_KINDS),
            "sources": self._sources(dev_id, headline),
            "people": self._people(),
            "organizations": rng.sample(_ORGS, rng.randint(0, 2)),
            "places": rng.sample(_PLACES, rng.randint(1, 3)),
            "topics": self._dev_topics(story),
        }
        story.developments.append(dev_id)
        story.live.append(dev_id)
        return data

    def quoted(self, story: _Story) -> dict[str, Any]:
        rng = self.rng
        quote_id = f"quote-{story.next_quote:05d}"
        story.next_quote += 1
        speaker, role = rng.choice(_PEOPLE)
        data: dict[str, Any] = {
            "quote_id": quote_id,
            "development_id": rng.choice(story.developments[-20:]),
            "speaker": speaker,
        }
        if rng.random() < 0.8:
            data["role"] = role
        data["text"] = self.text.body(rng, 60, 400)
        return data

    def corrected(self, story: _Story) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()
        changes: dict[str, Any]
        if roll < 0.4:
            changes = {"headline": self.text.headline(rng)}
        elif roll < 0.7:
            changes = {"body": self.text.body(rng)}
        elif roll < 0.85:
            changes = {"occurred_at": self._occurred(story)}
        else:
            changes = {"places": rng.sample(_PLACES, 2), "topics": self._dev_topics(story)}
        return {
            "development_id": rng.choice(story.live[-50:]),
            "changes": changes,
            "note": self.text.sentence(rng),
        }

    def retracted(self, story: _Story) -> dict[str, Any]:
        dev_id = self.rng.choice(story.live[-50:])
        story.live.remove(dev_id)
        return {"development_id": dev_id, "reason": self.text.sentence(self.rng)}

    def expected(self, story: _Story) -> dict[str, Any]:
        rng = self.rng
        followup_id = f"followup-{story.next_followup:04d}"
        story.next_followup += 1
        story.followups.append(followup_id)
        data: dict[str, Any] = {
            "followup_id": followup_id,
            "description": self.text.sentence(rng),
            "subjects": [n for n, _ in rng.sample(_PEOPLE, rng.randint(1, 2))],
        }
        if story.developments and rng.random() < 0.7:
            data["development_id"] = story.developments[-1]
        return data

    def resolved(self, story: _Story) -> dict[str, Any]:
        followup_id = story.followups.pop(int(self.rng.random() * len(story.followups)))
        data: dict[str, Any] = {"followup_id": followup_id}
        if story.developments:
            data["development_id"] = story.developments[-1]
        data["note"] = self.text.sentence(self.rng)
        return data

    def retitled(self, story: _Story) -> dict[str, Any]:
        data: dict[str, Any] = {"title": self.text.headline(self.rng)}
        if self.rng.random() < 0.5:
            data["summary"] = self.text.body(self.rng, 200, 600)
        return data

    def retagged(self, story: _Story) -> dict[str, Any]:
        topics = list(story.topics)
        topics[int(self.rng.random() * len(topics))] = self.rng.choice(TOPICS)
        story.topics = list(dict.fromkeys(topics))
        return {"topics": list(story.topics), "places": self.rng.sample(_PLACES, 2)}

    def closed(self, story: _Story) -> dict[str, Any]:
        story.closed = True
        return {"reason": self.text.sentence(self.rng)}

    def reopened(self, story: _Story) -> dict[str, Any]:
        story.closed = False
        return {"reason": self.text.sentence(self.rng)}

    # choosing what comes next -----------------------------------------------------------

    def _kind(self, story: _Story) -> str:
        if story.closed:
            return "story.reopened" if self.rng.random() < 0.25 else "quote.attributed"
        if not story.developments:
            return "development.reported"
        roll = self.rng.random()
        if roll < 0.52:
            return "development.reported"
        if roll < 0.78:
            return "quote.attributed"
        if roll < 0.84:
            return "development.corrected" if story.live else "development.reported"
        if roll < 0.85:
            return "development.retracted" if len(story.live) > 1 else "development.reported"
        if roll < 0.90:
            return "followup.expected"
        if roll < 0.94:
            return "followup.resolved" if story.followups else "followup.expected"
        if roll < 0.97:
            return "story.retitled"
        if roll < 0.972:
            return "story.retagged"
        if roll < 0.976:
            return "story.closed"
        return "quote.attributed"

    def events(self) -> Iterator[RecordedEvent]:
        """Every event as a :class:`RecordedEvent`, in position order."""
        rng = self.rng
        makers: dict[str, Callable[[_Story], dict[str, Any]]] = {
            "development.reported": self.reported,
            "quote.attributed": self.quoted,
            "development.corrected": self.corrected,
            "development.retracted": self.retracted,
            "followup.expected": self.expected,
            "followup.resolved": self.resolved,
            "story.retitled": self.retitled,
            "story.retagged": self.retagged,
            "story.closed": self.closed,
            "story.reopened": self.reopened,
        }
        next_story = 0
        for position in range(1, self.size.events + 1):
            if next_story < self.size.stories and self.open_at[next_story] < position:
                slug = f"scale-story-{next_story:04d}"
                story = _Story(
                    slug=slug,
                    topics=rng.sample(TOPICS, rng.randint(2, 4)),
                    start_day=rng.randint(0, 3000),
                )
                self.stories.append(story)
                next_story += 1
                kind = "story.opened"
                data = self.opened(story)
            else:
                story = self.stories[int(rng.random() * len(self.stories))]
                kind = self._kind(story)
                data = makers[kind](story)
            yield self._record(position, story, kind, data)

    def _record(
        self, position: int, story: _Story, kind: str, data: dict[str, Any]
    ) -> RecordedEvent:
        problems = story.rules.accept(story.slug, kind, data)
        if problems:
            raise AssertionError(f"generated an event breaking the story's rules: {problems}")
        if kind == "development.reported":
            occurred = self._occurred(story)
        else:
            occurred = _DAYS[min(story.start_day + story.next_dev // 3, len(_DAYS) - 1)]
        event_id = self._uuid()
        metadata = {"actor": "bench.dataset", "correlation_id": self._uuid()}
        data_json = orjson.dumps(data).decode()
        metadata_json = orjson.dumps(metadata).decode()
        schema_version = CURRENT_VERSIONS[kind]
        self.counts[kind] += 1
        if self.counts[kind] <= VALIDATE_FIRST or position % VALIDATE_EVERY == 0:
            raw = {
                "id": event_id,
                "type": kind,
                "occurred_at": occurred,
                "data": data,
                "metadata": metadata,
            }
            valid = validate_new_event(raw)
            if (valid.data_json, valid.metadata_json, valid.schema_version) != (
                data_json,
                metadata_json,
                schema_version,
            ):
                raise AssertionError(
                    f"the generator's JSON differs from validate_new_event's at {position}:\n"
                    f"  {data_json}\n  {valid.data_json}"
                )
            self.validated += 1
        story.version += 1
        self.recorded += timedelta(microseconds=self.rng.randint(1_000_000, 60_000_000))
        self.data_bytes += len(data_json)
        return RecordedEvent(
            position=position,
            id=event_id,
            stream=story.slug,
            version=story.version,
            type=kind,
            schema_version=schema_version,
            occurred_at=occurred,
            recorded_at=self.recorded.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            data_json=data_json,
            metadata_json=metadata_json,
        )


def events(size: Size, seed: int = SEED) -> Iterator[RecordedEvent]:
    """The log of ``size`` as :class:`RecordedEvent` objects, in position order, without
    writing it anywhere (the same events :func:`generate` writes)."""
    return _Generator(size, seed).events()


# -- building and caching --------------------------------------------------------------------


async def _write(path: Path, size: Size, progress: Callable[[int], object] | None) -> _Generator:
    generator = _Generator(size)
    store = SQLiteEventStore(path, synchronous="OFF", readers=1)
    await store.open()
    try:
        chunk: list[RecordedEvent] = []
        for event in generator.events():
            chunk.append(event)
            if len(chunk) == CHUNK:
                await store.import_events(chunk)
                chunk = []
                if progress:
                    progress(event.position)
        if chunk:
            await store.import_events(chunk)
        if await store.head() != size.events:
            raise AssertionError("the generated log does not hold every event")
    finally:
        await store.close()
    return generator


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def generate(
    size: Size, path: Path, progress: Callable[[int], object] | None = None
) -> dict[str, Any]:
    """Write the log of ``size`` to ``path`` (made under a temporary name, then renamed)."""
    partial = path.with_name(path.name + ".partial")
    _remove(partial)
    started = time.perf_counter()
    generator = asyncio.run(_write(partial, size, progress))
    seconds = time.perf_counter() - started
    for suffix in ("-wal", "-shm"):
        if Path(f"{partial}{suffix}").exists():
            raise AssertionError(f"{partial}{suffix} left behind: the database was not closed")
    os.replace(partial, path)
    info: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "stories": size.stories,
        "events": size.events,
        "seconds": round(seconds, 1),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "file_bytes": path.stat().st_size,
        "data_bytes": generator.data_bytes,
        "validated_through_validate_new_event": generator.validated,
        "types": dict(sorted(generator.counts.items())),
    }
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def check(path: Path) -> str:
    """``feedsvc check`` on the file: raises unless the log is sound; returns its line."""

    async def go() -> str:
        store = SQLiteEventStore(path, create=False, readers=1)
        await store.open()
        try:
            report = await check_log(store)
        finally:
            await store.close()
        if not report.ok:
            raise AssertionError("feedsvc check failed:\n  " + "\n  ".join(report.problems))
        return f"ok: {report.events} events in {report.streams} streams; the log is sound"

    return asyncio.run(go())


def ensure(
    size: Size, *, check_fresh: bool = False, say: Callable[[str], object] = print
) -> Dataset:
    """The cached log of ``size``, generating it first if there is none. With
    ``check_fresh``, a freshly generated log is also checked as ``feedsvc check`` would."""
    path = path_for(size)
    info_path = path.with_suffix(".json")
    if path.exists() and info_path.exists():
        info: dict[str, Any] = json.loads(info_path.read_text())
        say(
            f"  data set: {path} (cached; generated in {info['seconds']:.0f} s "
            f"on {info['generated']})"
        )
        return Dataset(path, size, info, fresh=False)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    say(f"  data set: generating {size.describe()} into {path} ...")
    last = [time.perf_counter()]

    def progress(done: int) -> None:
        if time.perf_counter() - last[0] >= 30:
            last[0] = time.perf_counter()
            print(f"    {done:,} of {size.events:,} events written", file=sys.stderr, flush=True)

    info = generate(size, path, progress)
    say(
        f"  data set: generated in {info['seconds']:.0f} s ({size.events / info['seconds']:,.0f} "
        f"events/s), {info['file_bytes'] / 1e6:,.0f} MB"
    )
    if check_fresh:
        started = time.perf_counter()
        line = check(path)
        seconds = time.perf_counter() - started
        say(f"  feedsvc check of the fresh data set: {line} ({seconds:.0f} s)")
    return Dataset(path, size, info, fresh=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.dataset [--quick] [--check]``."""
    parser = argparse.ArgumentParser(description="Generate (or find) the bench.scale data set.")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.describe()}")
    parser.add_argument("--check", action="store_true", help="run feedsvc check on it")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    found = ensure(size, check_fresh=args.check)
    if args.check and not found.fresh:
        print(f"  {check(found.path)}")
    print(json.dumps(found.info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
