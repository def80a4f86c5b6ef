"""What every sender and peer adapter shares: the argument parser, how a figure is
reported, and the fixed clock a stream is sent on.

This file is imported by the peers' adapters (each in its peer's own virtual
environment) and by tenure's sender (``bench/sender.py``), so a stream is paced the
same way for every system. It uses the standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

TICK = 0.05  # a stream sends one batch every 50 ms


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["info", "setup", "enqueue", "worker", "teardown", "stream"])
    p.add_argument("dsn", nargs="?", default="")
    p.add_argument("n", type=int, nargs="?", default=0)
    p.add_argument("shape", nargs="?", default="batch", choices=["single", "batch"])
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--spike", action="store_true", help="enqueue: send the spike's task")
    p.add_argument("--rate", type=float, default=0.0, help="stream: tasks/s")
    p.add_argument("--seconds", type=float, default=0.0, help="stream: how long")
    p.add_argument("--tick", type=float, default=TICK, help="stream: seconds between batches")
    return p


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


def timed(n: int, fn: Callable[[], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t0
    return {"n": n, "seconds": elapsed, "rate": n / elapsed}


class Clock:
    """A stream of ``rate`` tasks/s for ``seconds``, sent as one batch per tick.

    Tick k (at ``k * tick`` s) brings the total sent up to ``rate * (k + 1) * tick``.
    A sender that falls behind (a send that took longer than a tick) does not skip
    work: the next batch carries everything due by then, and the clock counts the
    ticks it missed and the largest batch it had to carry beyond one tick's share.
    The stream ends at ``seconds`` whatever was sent: a sender that could not keep
    up shows as an achieved rate below the target, never as a longer stream.
    """

    def __init__(self, rate: float, seconds: float, tick: float = TICK) -> None:
        self.rate, self.seconds, self.tick = rate, seconds, tick
        self.planned = round(rate * seconds)
        self.sent = 0
        self.missed = 0
        self.max_behind = 0
        self._last_k = -1
        self.t0 = 0.0
        self.wall0 = 0.0
        self.t_end = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        emit({"started": self.wall0})  # the harness times a spike from this line

    def due(self) -> int | None:
        """How many to send now; None once the stream is over."""
        now = time.monotonic() - self.t0
        if now >= self.seconds:
            self.t_end = now
            return None
        k = int(now / self.tick)
        self.missed += max(0, k - self._last_k - 1)
        self._last_k = k
        n = min(self.planned, round(self.rate * (k + 1) * self.tick)) - self.sent
        self.max_behind = max(self.max_behind, n - round(self.rate * self.tick))
        return max(0, n)

    def pause(self) -> float:
        """Seconds until the next tick."""
        now = time.monotonic() - self.t0
        return max(0.0, (int(now / self.tick) + 1) * self.tick - now)

    def summary(self) -> dict[str, Any]:
        elapsed = self.t_end or (time.monotonic() - self.t0)
        return {
            "target": self.rate,
            "rate": self.sent / elapsed if elapsed else 0.0,
            "sent": self.sent,
            "planned": self.planned,
            "seconds": elapsed,
            "missed_ticks": self.missed,
            "max_behind": self.max_behind,
            "wall0": self.wall0,
        }


def run_clock(clock: Clock, send: Callable[[int], None]) -> dict[str, Any]:
    """Drive ``send(n)`` on the clock; print and return the summary."""
    clock.start()
    while (n := clock.due()) is not None:
        if n:
            send(n)
            clock.sent += n
        time.sleep(clock.pause())
    out = clock.summary()
    emit(out)
    return out


async def run_clock_async(clock: Clock, send: Callable[[int], Awaitable[None]]) -> dict[str, Any]:
    """The same for an asyncio sender."""
    clock.start()
    while (n := clock.due()) is not None:
        if n:
            await send(n)
            clock.sent += n
        await asyncio.sleep(clock.pause())
    out = clock.summary()
    emit(out)
    return out
