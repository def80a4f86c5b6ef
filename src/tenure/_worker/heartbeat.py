"""Heartbeat: one statement per interval renews every lease this worker holds.

Rules:
- The renewal names each (task, attempt) and this worker as owner; the database
  clock sets the new expiry. A held attempt missing from the answer was taken over:
  its ``lease_lost`` is set and it is no longer held.
- Attempts whose outcome is being written are renewed but not judged: the
  completer reports their fate.
- If no heartbeat has succeeded for most of a lease, the worker cuts itself off
  (self-fencing) before the database could consider its leases expired: every held
  task is marked lost and claiming pauses until a heartbeat sent less than that long
  ago succeeds (a late answer to an old one proves nothing about the link now).
- Rows the database says this worker owns but does not hold (a claim whose answer
  was lost, prefetched attempts dropped while self-fenced) are handed back once they
  are half a lease old, without counting a crash. Attempts that had started when the
  worker fenced itself are not among them: they may have run, so they are left to
  expire and the reaper counts the crash (a task that stalls its worker past the
  lease is capped by ``max_crashes`` like one that kills it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from tenure._db import arrays
from tenure._worker.link import Link
from tenure._worker.service import Service
from tenure._worker.state import Held, Holdings

log = logging.getLogger(__name__)

SELF_FENCE_FRACTION = 0.8


@dataclass(frozen=True)
class HeartbeatResult:
    renewed: int
    lost: list[int]
    idle_elsewhere: int  # free slots of the other live workers serving our queues
    cancel: list[int]  # held tasks an operator asked to cancel
    drain: bool  # an operator asked this worker to drain


class Heartbeat(Service):
    name = "heartbeat"

    def __init__(
        self,
        link: Link,
        holdings: Holdings,
        worker_id: UUID,
        lease: timedelta,
        interval: timedelta,
        on_beat: Callable[[HeartbeatResult], None] | None = None,
        on_lost: Callable[[Held], None] | None = None,
    ) -> None:
        super().__init__(interval.total_seconds(), jitter=0.1)
        self.on_beat = on_beat
        self.on_lost = on_lost
        self.link = link
        self.holdings = holdings
        self.worker_id = worker_id
        self.lease = lease
        self.state = "active"
        # How many outcomes wait to be written, and for how long without progress:
        # set by the worker to its completer's view, published with each beat.
        self.outcomes: Callable[[], tuple[int, float]] = lambda: (0, 0.0)
        self.last_ok = time.monotonic()
        self.fenced = False

    async def run_once(self) -> HeartbeatResult:
        snapshot = self.holdings.snapshot()
        sent = time.monotonic()
        surrendered = list(self.holdings.surrendered)
        waiting, stalled = self.outcomes()
        try:
            rows = await self.link.fetch(
                "lease_renew_many",
                {
                    "worker": self.worker_id,
                    "state": self.state,
                    "held": len(self.holdings.held),
                    "running": self.holdings.running(),
                    "lease": self.lease,
                    "ids": arrays.ints(snapshot),
                    "attempts": arrays.ints(snapshot.values()),
                    "surrendered": arrays.ints(surrendered),
                    "orphan_after": self.lease / 2,
                    "outcomes_pending": waiting,
                    "outcomes_stalled": stalled if stalled > self.lease.total_seconds() else None,
                },
            )
        except Exception:
            self.check_self_fence()
            raise
        # The database set the new expiries at or after `sent`: count from there. An
        # answer that took most of a lease to come back (a link just restored delivers
        # renewals sent long ago) does not lift self-fencing: the next one, sent now, does.
        self.last_ok = sent
        fresh = time.monotonic() - sent < SELF_FENCE_FRACTION * self.lease.total_seconds()
        if self.fenced and fresh:
            log.info("worker_reconnected worker=%s", self.worker_id)
            self.fenced = False
        renewed: set[int] = set(rows[0][1]) if rows else set()
        idle_elsewhere = int(rows[0][2]) if rows else 0
        orphans = int(rows[0][3]) if rows else 0
        if surrendered:  # those the reaper has expired no longer need keeping apart
            self.holdings.surrendered.intersection_update(rows[0][6] if rows else ())
        if orphans:
            log.warning(
                "leases_orphaned worker=%s released=%d: claimed rows this worker never "
                "received were handed back",
                self.worker_id,
                orphans,
            )
        lost: list[int] = []
        for task_id, attempt in snapshot.items():
            if task_id in renewed:
                continue
            held = self.holdings.held.get(task_id)
            if held is None or held.completing or held.claimed.attempt != attempt:
                continue
            self.lose(task_id, attempt, "taken over")
            lost.append(task_id)
        result = HeartbeatResult(
            renewed=len(renewed),
            lost=lost,
            idle_elsewhere=idle_elsewhere,
            cancel=[int(i) for i in rows[0][4]] if rows else [],
            drain=bool(rows[0][5]) if rows else False,
        )
        if self.on_beat is not None:
            self.on_beat(result)
        return result

    def lose(self, task_id: int, attempt: int, why: str, *, surrender: bool = False) -> None:
        # A surrendered attempt's row may go on naming this worker until the reaper
        # expires it: it must not be handed back as never received.
        if surrender:
            held = self.holdings.surrender(task_id, attempt)
        else:
            held = self.holdings.drop(task_id, attempt)
        if held is None:
            return
        held.context.mark_lost()
        if self.on_lost is not None:
            self.on_lost(held)
        self.holdings.counts["lease_lost"] += 1
        log.warning(
            "lease_lost task=%s attempt=%s worker=%s reason=%s",
            task_id,
            attempt,
            self.worker_id,
            why,
        )

    def check_self_fence(self) -> bool:
        """Cut the worker off before its leases can expire unrenewed.

        The last successful renewal was sent at ``last_ok``, so the database's
        expiry is at least a lease later; the worker gives up at 80 % of that, which
        leaves room for the watchdog's own delay.
        """
        silent = time.monotonic() - self.last_ok
        if silent < SELF_FENCE_FRACTION * self.lease.total_seconds():
            return self.fenced
        if not self.fenced:
            log.error(
                "worker_self_fenced worker=%s silent_for=%.1fs: the database is unreachable for "
                "longer than the lease; treating every held task as lost",
                self.worker_id,
                silent,
            )
        self.fenced = True
        for task_id, attempt in list(self.holdings.snapshot().items()):
            held = self.holdings.held[task_id]
            # One that never started is handed back by the next heartbeat, costing
            # nothing; one that ran may have done its work: the reaper counts a crash.
            self.lose(task_id, attempt, "self-fenced", surrender=held.started)
        return True
