"""Promoter: moves due scheduled tasks (delays, retries, crash backoff) into their queues.

Every live worker runs it at the poll interval, taking rows with ``SKIP LOCKED``.
Each promoted task gets its fair place among its partition key's work, and the
queues that got work are woken with a NOTIFY.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from tenure._store.worker import AsyncStore
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.service import Service

log = logging.getLogger(__name__)

BATCH = 5000


@dataclass(frozen=True)
class PromoteResult:
    promoted: dict[str, int]


class Promoter(Service):
    name = "promoter"

    def __init__(self, store: AsyncStore, interval: timedelta, clock: Clock = MONOTONIC) -> None:
        super().__init__(interval.total_seconds(), jitter=0.2, clock=clock)
        self.store = store

    async def run_once(self) -> PromoteResult:
        promoted = {p.queue: p.count for p in await self.store.promote_due(limit=BATCH)}
        if promoted:
            log.debug("tasks_promoted %s", promoted)
        return PromoteResult(promoted)
