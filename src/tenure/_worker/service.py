"""The shape every background loop shares: start, stop, wake, and one public pass.

Rules:
- ``run_once()`` does one pass and returns a small result the tests assert on; tests
  call it directly.
- The loop calls it every ``interval`` (shortened by up to ``jitter`` so a fleet does
  not fire in step) or sooner when woken; :meth:`Service.next_delay` may say otherwise
  (a backoff after failures). An exception in one pass is logged (:meth:`Service.failed`)
  and the loop goes on.
- Every wait goes through the injected :class:`~tenure._worker.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from tenure._db.connect import describe
from tenure._worker.clock import MONOTONIC, Clock

log = logging.getLogger(__name__)


class Service:
    """Base class of the worker's loops."""

    name = "service"

    def __init__(self, interval: float, *, jitter: float = 0.1, clock: Clock = MONOTONIC) -> None:
        self.interval = interval
        self.jitter = jitter
        self.clock = clock
        self.failures = 0  # passes failed in a row
        self._wake = asyncio.Event()
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
        log.warning("%s_failed error=%s", self.name, describe(exc))

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.run_once()
                self.failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad pass must not end the loop
                self.failures += 1
                self.failed(exc)
            await self.clock.wait(self._wake, self.next_delay())
            self._wake.clear()
