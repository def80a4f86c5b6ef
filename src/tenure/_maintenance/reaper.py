"""Reaper: turns expired leases back into claimable work.

Every live worker runs it at the heartbeat interval; rows are taken with
``SKIP LOCKED`` so reapers never wait on each other, and no worker is special. For
each expired lease the attempt is recorded as ``lease_expired`` and the crash
counter bumped; the first crash is taken over at once, repeated ones back off, and
a task that reached its crash cap is quarantined. Workers that stopped
heartbeating long ago are marked gone.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from tenure._store.worker import AsyncStore
from tenure._store.worker_rows import ExpiredLease
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.service import Service

log = logging.getLogger(__name__)

BATCH = 1000


@dataclass(frozen=True)
class ReapResult:
    requeued: list[int]
    quarantined: list[int]
    workers_gone: int


class Reaper(Service):
    name = "reaper"

    def __init__(
        self,
        store: AsyncStore,
        interval: timedelta,
        gone_after: timedelta,
        clock: Clock = MONOTONIC,
    ) -> None:
        # Jitter only shortens the interval, so a takeover never waits longer than it.
        super().__init__(interval.total_seconds(), jitter=0.2, clock=clock)
        self.store = store
        self.gone_after = gone_after
        self.counts: Counter[str] = Counter()  # lease_expired, task_quarantined (metrics)

    async def run_once(self) -> ReapResult:
        expired: list[ExpiredLease] = []
        while True:  # after a mass expiry, keep going until a batch comes back short
            batch = await self.store.expire_leases(limit=BATCH)
            expired.extend(batch)
            if len(batch) < BATCH:
                break
        requeued = [e.task_id for e in expired if e.verdict == "requeued"]
        quarantined = [e.task_id for e in expired if e.verdict == "quarantined"]
        self.counts["lease_expired"] += len(requeued)
        self.counts["task_quarantined"] += len(quarantined)
        for task_id in requeued:
            log.info("lease_expired task=%s requeued=true", task_id)
        for task_id in quarantined:
            log.error("task_quarantined task=%s: its lease expired too many times", task_id)
        gone = await self.store.mark_gone(after=self.gone_after)
        for worker_id in gone:
            log.info("worker_gone worker=%s", worker_id)
        return ReapResult(requeued, quarantined, len(gone))
