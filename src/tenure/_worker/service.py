"""The shape every background loop shares: start, stop, wake, and one public pass.

``run_once()`` does one pass and returns a small result the tests assert on. The
loop calls it every ``interval`` (shortened by up to ``jitter`` so a fleet does not
fire in step) or sooner when woken; an exception in one pass is logged and the
loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

log = logging.getLogger(__name__)


class Service:
    """Base class of the worker's loops."""

    name = "service"

    def __init__(self, interval: float, *, jitter: float = 0.1) -> None:
        self.interval = interval
        self.jitter = jitter
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.passes = 0
        self.failures = 0

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
        return self.interval * (1 - random.uniform(0, self.jitter))

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.run_once()
                self.passes += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad pass must not end the loop
                self.failures += 1
                log.warning(
                    "%s_failed error=%s",
                    self.name,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
            try:
                await asyncio.wait_for(self._wake.wait(), self.next_delay())
            except TimeoutError:
                pass
            self._wake.clear()
