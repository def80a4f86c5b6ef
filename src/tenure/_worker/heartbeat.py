"""Heartbeat: one statement per interval renews every lease this worker holds.

Rules:
- The renewal names each (task, attempt) and this worker as owner; the database
  clock sets the new expiry. A held attempt missing from the answer was taken over:
  the beat reports it lost and the claim loop lets it go.
- Attempts whose outcome waits to be written are renewed but not judged: the write
  reports their fate.
- If no heartbeat has succeeded for most of a lease, the worker cuts itself off
  (self-fencing) before the database could consider its leases expired: the claim
  loop drops every held task and stops claiming until a heartbeat sent less than
  that long ago succeeds (a late answer to an old one proves nothing about the link
  now). :class:`FenceWatch` checks this on a loop that never waits on the database.
- Rows the database says this worker owns but does not hold (a claim whose answer
  was lost, prefetched attempts dropped while self-fenced) are handed back once they
  are half a lease old, without counting a crash. Attempts that had started when the
  worker fenced itself are not among them: they may have run, so they are left to
  expire and the reaper counts the crash (a task that stalls its worker past the
  lease is capped by ``max_crashes`` like one that kills it).
- The first renewal that succeeds after failed ones logs, once, how long the worker
  went without a database; when another server answers than before (the primary
  failed over) it says ``database_failover`` and names both, and, when the new
  server's clock is more than :data:`CLOCK_MOVED_S` from the old one's, by how much:
  leases are deadlines on the database clock, so every lease granted before the
  failover is that much shorter (or longer) on the new primary.
- While renewals fail, the next one is tried after :data:`RETRY_FRACTION` of an
  interval, not a whole one: a worker whose primary failed over reaches the new one
  well within one heartbeat of its promotion (each try is one connect, refused at
  once by a standby, or one renewal).
- The heartbeat owns its link's health (``last_ok``, ``fenced``) and the operator's
  drain request (``drain_requested``); it reads what it renews from
  :class:`~tenure._worker.state.Holdings` and tells the claim loop, its
  :class:`Peer`, what it learned. It changes no attempt itself.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol
from uuid import UUID

from tenure._store.worker import AsyncStore
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.service import Service
from tenure._worker.state import Holdings

log = logging.getLogger(__name__)

SELF_FENCE_FRACTION = 0.8
CLOCK_MOVED_S = 1.0
RETRY_FRACTION = 0.25


@dataclass(frozen=True)
class Beat:
    """What one renewal learned."""

    renewed: int
    lost: list[tuple[int, int]]  # held (task, attempt) another owner took over
    surrendered_kept: frozenset[int] | None  # surrendered rows still ours (None: none sent)
    idle_elsewhere: int  # free slots of the other live workers serving our queues
    cancel: list[int]  # held tasks an operator asked to cancel
    drain: bool  # an operator asked this worker to drain


class Peer(Protocol):
    """Whom the heartbeat tells what it learned: the claim loop."""

    def outcomes_waiting(self) -> tuple[int, float]:
        """How many outcomes wait to be written, and for how long without progress."""
        ...

    def heard(self, beat: Beat) -> None:
        """A renewal's news: attempts lost, cancels asked for, idle capacity elsewhere."""
        ...

    def self_fenced(self) -> None:
        """Renewals failed for most of a lease: drop every held attempt, stop claiming."""
        ...

    def reconnected(self) -> None:
        """A renewal sent just now succeeded: claiming may go on."""
        ...


class Heartbeat(Service):
    name = "heartbeat"

    def __init__(
        self,
        store: AsyncStore,
        holdings: Holdings,
        peer: Peer,
        worker_id: UUID,
        lease: timedelta,
        interval: timedelta,
        clock: Clock = MONOTONIC,
    ) -> None:
        super().__init__(interval.total_seconds(), jitter=0.1, clock=clock)
        self.store = store
        self.holdings = holdings
        self.peer = peer
        self.worker_id = worker_id
        self.lease = lease
        self.state = "active"
        self.last_ok = clock.now()
        self.fenced = False
        self.failing = False  # the last renewal failed
        self.server: str | None = None  # the server the last renewal reached
        self.clock_offset: float | None = None  # its clock minus ours
        self.drain_requested = asyncio.Event()  # set by the first beat that asks

    def draining(self) -> None:
        """Publish the worker as draining from the next beat on."""
        self.state = "draining"

    def next_delay(self) -> float:
        delay = super().next_delay()
        return delay * RETRY_FRACTION if self.failing else delay

    async def run_once(self) -> Beat:
        holdings = self.holdings
        held = holdings.snapshot()
        sent = self.clock.now()
        surrendered = holdings.surrendered()
        waiting, stalled = self.peer.outcomes_waiting()
        try:
            renewal = await self.store.renew(
                worker=self.worker_id,
                state=self.state,
                held=held,
                running=holdings.running(),
                lease=self.lease,
                surrendered=surrendered,
                orphan_after=self.lease / 2,
                outcomes_pending=waiting,
                outcomes_stalled=stalled if stalled > self.lease.total_seconds() else None,
            )
        except Exception:
            self.failing = True
            self.check_self_fence()
            raise
        self._back(previous_ok=self.last_ok)
        # The database set the new expiries at or after `sent`: count from there. An
        # answer that took most of a lease to come back (a link just restored delivers
        # renewals sent long ago) does not lift self-fencing: the next one, sent now, does.
        self.last_ok = sent
        fresh = self.clock.now() - sent < SELF_FENCE_FRACTION * self.lease.total_seconds()
        if self.fenced and fresh:
            log.info("worker_reconnected worker=%s", self.worker_id)
            self.fenced = False
            self.peer.reconnected()
        if renewal.orphans_released:
            log.warning(
                "leases_orphaned worker=%s released=%d: claimed rows this worker never "
                "received were handed back",
                self.worker_id,
                renewal.orphans_released,
            )
        lost = []
        for task_id, attempt in held.items():
            if task_id in renewal.renewed:
                continue
            now = holdings.holds(task_id, attempt)
            if now is not None and not now.outcome_pending:
                lost.append((task_id, attempt))
        beat = Beat(
            renewed=len(renewal.renewed),
            lost=lost,
            # those the reaper has expired no longer need keeping apart
            surrendered_kept=renewal.surrendered_kept if surrendered else None,
            idle_elsewhere=renewal.idle_elsewhere,
            cancel=renewal.cancel_requested,
            drain=renewal.drain_requested,
        )
        self.peer.heard(beat)
        if beat.drain:
            self.drain_requested.set()
        return beat

    def _back(self, previous_ok: float) -> None:
        """After a renewal succeeded: say once that the database is back after
        failures, and whether another server answers now than before."""
        server, before = self.store.server, self.server
        offset, offset_before = self.store.clock_offset, self.clock_offset
        self.server, self.clock_offset = server, offset
        if not self.failing and (server == before or before is None):
            return  # nothing failed, and the first renewal names no change
        self.failing = False
        without = self.clock.now() - previous_ok
        if before is not None and server != before:
            moved = None if offset is None or offset_before is None else offset - offset_before
            log.warning(
                "database_failover worker=%s from=%s to=%s without_database=%.1fs%s",
                self.worker_id,
                before,
                server,
                without,
                f" clock_moved={moved:+.1f}s: leases granted before it are that much "
                f"{'shorter' if moved > 0 else 'longer'} now"
                if moved is not None and abs(moved) > CLOCK_MOVED_S
                else "",
            )
        else:
            log.info(
                "database_back worker=%s server=%s without_database=%.1fs",
                self.worker_id,
                server,
                without,
            )

    def check_self_fence(self) -> bool:
        """Cut the worker off before its leases can expire unrenewed.

        The last successful renewal was sent at ``last_ok``, so the database's
        expiry is at least a lease later; the worker gives up at 80 % of that, which
        leaves room for the watchdog's own delay.
        """
        silent = self.clock.now() - self.last_ok
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
        self.peer.self_fenced()
        return True


class FenceWatch(Service):
    """Self-fences even while a renewal hangs: this loop never waits on the database."""

    name = "watchdog"

    def __init__(self, heartbeat: Heartbeat, clock: Clock = MONOTONIC) -> None:
        super().__init__(min(1.0, heartbeat.lease.total_seconds() / 10), jitter=0.0, clock=clock)
        self.heartbeat = heartbeat

    async def run_once(self) -> bool:
        return self.heartbeat.check_self_fence()
