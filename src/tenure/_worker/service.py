"""The shape every background loop shares: start, stop, wake, and one public pass.

Rules:
- ``run_once()`` does one pass and returns a small result the tests assert on; tests
  call it directly.
- The loop calls it every ``interval`` (shortened by up to ``jitter`` so a fleet does
  not fire in step) or sooner when woken; :meth:`Service.next_delay` may say otherwise
  (a backoff after failures). An exception in one pass is logged (:meth:`Service.failed`)
  and the loop goes on.
- Every wait goes through the injected :class:`~tenure._worker.clock.Clock`.
- A run of failures is logged by a :class:`Streak`: the first at WARNING, then one
  line a minute while it lasts, and its end at INFO, so a database that is away for
  a while (a failover) costs each loop a few lines, not one per pass.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from tenure._db.connect import describe
from tenure._worker.clock import MONOTONIC, Clock

log = logging.getLogger(__name__)


class Streak:
    """The log lines of one loop's consecutive failures: the first, one a minute after
    it (with how many so far), the rest at DEBUG, and the recovery."""

    EVERY_S = 60.0

    def __init__(self, name: str, clock: Clock = MONOTONIC) -> None:
        self.name = name
        self.clock = clock
        self.count = 0
        self._since = 0.0
        self._warned = 0.0

    def failed(self, detail: str) -> None:
        """One more failure; ``detail`` is the rest of the line (``error=...``)."""
        now = self.clock.now()
        self.count += 1
        if self.count == 1:
            self._since = self._warned = now
            log.warning("%s_failed %s", self.name, detail)
        elif now - self._warned >= self.EVERY_S:
            self._warned = now
            log.warning(
                "%s_failed %s failures=%d for=%.0fs",
                self.name,
                detail,
                self.count,
                now - self._since,
            )
        else:
            log.debug("%s_failed %s", self.name, detail)

    def ok(self) -> None:
        """A success: the end of the run of failures, if there was one."""
        if self.count:
            log.info(
                "%s_recovered failures=%d after=%.1fs",
                self.name,
                self.count,
                self.clock.now() - self._since,
            )
            self.count = 0


class Service:
    """Base class of the worker's loops."""

    name = "service"

    def __init__(self, interval: float, *, jitter: float = 0.1, clock: Clock = MONOTONIC) -> None:
        self.interval = interval
        self.jitter = jitter
        self.clock = clock
        self.failures = 0  # passes failed in a row
        self._wake = asyncio.Event()
        self.streak = Streak(self.name, clock)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def run_once(self) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name=self.name)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def next_delay(self) -> float:
        """Seconds from the end of one pass to the next."""
        return self.interval * (1 - random.uniform(0, self.jitter))

    def failed(self, exc: Exception) -> None:
        """A pass raised ``exc``."""
        self.streak.failed(f"error={describe(exc)}")

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.run_once()
                self.failures = 0
                self.streak.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad pass must not end the loop
                self.failures += 1
                self.failed(exc)
            await self.clock.wait(self._wake, self.next_delay())
            self._wake.clear()
