"""The coordination port: what several ``feedsvc serve`` replicas on one log agree on.

* **Rate limits** shared by every replica: a token bucket per key
  (:meth:`Coordinator.take`).
* **Leadership** of jobs that must run once across replicas, such as the cron
  rebuild (:meth:`Coordinator.lead`).
* **Rebuild broadcast**: ``feedsvc rebuild`` tells every running replica to rebuild
  its own read model (:meth:`Coordinator.announce_rebuild`,
  :meth:`Coordinator.subscribe_rebuild`).

:class:`LocalCoordinator` is the adapter of one process on one data folder (the
SQLite default): buckets in memory, always the leader, and a rebuild made by building
the shared data folder's read model, which a running server follows. The PostgreSQL
adapter (:mod:`feedsvc.store.pg_coordination`) shares all three through the server.
:func:`feedsvc.store.make_coordinator` picks the one of the configured database.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

RebuildListener = Callable[[], object]
"""Called (on the event loop) when a rebuild is announced."""


def refill(level: float, elapsed: float, rate: float, burst: float) -> float:
    """A bucket's level after ``elapsed`` seconds at ``rate`` a second, capped at
    ``burst`` (a clock that went back refills nothing)."""
    return min(burst, level + max(0.0, elapsed) * rate)


def bucket_size(burst: float) -> float:
    """The burst a bucket holds: at least one request."""
    return max(1.0, float(burst))


class Coordinator(ABC):
    """What replicas of the service share beyond the log."""

    broadcasts_rebuilds: bool = False
    """True when :meth:`announce_rebuild` reaches every running replica, each of which
    rebuilds its own read model (so ``feedsvc rebuild`` only announces). False when a
    rebuild is made by building the data folder's read model in the process that
    asks, and a server on that folder switches to it."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and migrate what the adapter owns; a StoreError if impossible."""

    @abstractmethod
    async def close(self) -> None:
        """Give up leadership, stop listening, close every connection."""

    @abstractmethod
    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> float:
        """Spend ``cost`` from ``key``'s token bucket, which refills at ``rate`` a
        second up to ``burst`` (at least 1): 0 if allowed, else the seconds to wait
        before it would be. A rate of zero or less disables limiting."""

    @abstractmethod
    async def lead(self, name: str) -> bool:
        """Try to be (or stay) the one leader of ``name`` among the replicas; whether
        this process leads it now. Leadership lasts until :meth:`close` or the
        process's death; call again before each run of the job it guards."""

    @abstractmethod
    async def announce_rebuild(self) -> None:
        """Tell every running replica to rebuild its read model."""

    @abstractmethod
    async def subscribe_rebuild(self, listener: RebuildListener) -> None:
        """Call ``listener`` whenever a rebuild is announced, until :meth:`close`."""


class LocalCoordinator(Coordinator):
    """One process: token buckets in memory, always the leader; a rebuild is built
    into the data folder by the process that asks (the server follows the read
    model's pointer), so announcing and subscribing do nothing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    async def open(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to release."""

    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> float:
        """The bucket of ``key`` in this process's memory."""
        return self.take_now(key, rate, burst, cost)

    def take_now(self, key: str, rate: float, burst: float, cost: float = 1.0) -> float:
        """:meth:`take` without awaiting."""
        if rate <= 0:
            return 0.0
        burst = bucket_size(burst)
        now = self.clock()
        level, then = self._buckets.get(key, (burst, now))
        level = refill(level, now - then, rate, burst)
        if level >= cost:
            self._buckets[key] = (level - cost, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (cost - level) / rate

    async def lead(self, name: str) -> bool:
        """Always: there is no other replica."""
        return True

    async def announce_rebuild(self) -> None:
        """Nothing to send: the rebuild is built here, into the shared data folder."""

    async def subscribe_rebuild(self, listener: RebuildListener) -> None:
        """Nothing is ever announced: a server follows the read model's pointer."""
