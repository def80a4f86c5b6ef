"""A clock the test moves: every wait of the worker's loops ends when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from tenure._worker.clock import Clock

# Yields to the event loop after each step of time: enough for the loops woken by a
# step to run up to their next wait (they do no real I/O against a fake store).
SETTLE_YIELDS = 50


class FakeClock(Clock):
    """Monotonic seconds that move only by :meth:`advance`.

    >>> clock = FakeClock()
    >>> await clock.advance(5)   # every wait due within 5 s ends, in order
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._due: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._due, (self.t + seconds, next(self._order), future))
        await future

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        if timeout <= 0:
            await asyncio.sleep(0)
            return event.is_set()
        woken = asyncio.ensure_future(event.wait())
        slept = asyncio.ensure_future(self.sleep(timeout))
        try:
            await asyncio.wait({woken, slept}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            slept.cancel()
        return event.is_set()

    async def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, ending each wait at its own moment."""
        target = self.t + seconds
        while self._due and self._due[0][0] <= target:
            due, _, future = heapq.heappop(self._due)
            if future.done():
                continue
            self.t = max(self.t, due)
            future.set_result(None)
            await settle()
        self.t = target
        await settle()

    async def step(self, seconds: float, times: int) -> None:
        """``advance(seconds)``, ``times`` times."""
        for _ in range(times):
            await self.advance(seconds)


async def settle() -> None:
    """Let every task that can run now run up to its next wait."""
    for _ in range(SETTLE_YIELDS):
        await asyncio.sleep(0)
