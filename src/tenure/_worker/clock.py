"""The worker's clock: every wait and every "how long since" of the control plane.

Rules:
- The worker's own clock is monotonic and decides only the worker's own timing
  (intervals, backoff, when to fence itself, how long outcomes wait); who owns a task
  is always decided by the database clock.
- Nothing in the loops calls ``time`` or ``asyncio.sleep`` directly: they are given a
  :class:`Clock`, so a test drives time with a clock of its own.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Monotonic seconds, and waits on them."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False)."""
        if event.is_set():
            return True
        try:
            await asyncio.wait_for(event.wait(), max(0.0, timeout))
            return True
        except TimeoutError:
            return False


MONOTONIC = Clock()
