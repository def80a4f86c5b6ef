"""Claimer: takes up to the free slots in one statement.

The claim function in the database does the choosing (``FOR UPDATE SKIP LOCKED``,
fleet-wide limits, a fair share per queue) and sets owner, attempt and the lease
expiry from the database clock. The claimer asks for exactly the free slots, only
for task names this worker can run, and rotates which queue goes first. Outcomes
waiting to be written ride along: the same statement records them first, fenced as
the completer's own writes are.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

from tenure._worker.completer import Outcome, outcome_params
from tenure._worker.link import Link
from tenure._worker.state import Claimed

log = logging.getLogger(__name__)


class Claimer:
    name = "claimer"

    def __init__(
        self,
        link: Link,
        worker_id: UUID,
        queues: tuple[str, ...],
        names: list[str],
        lease: timedelta,
    ) -> None:
        self.link = link
        self.worker_id = worker_id
        self.queues = list(queues)
        self.names = names
        self.lease = lease
        self._turn = 0

    async def run_once(
        self, free: int, outcomes: list[Outcome] | None = None
    ) -> tuple[list[Claimed], dict[int, str]]:
        """Record ``outcomes`` (if any), then claim up to ``free`` tasks; returns what
        this worker now holds leases on, and the verdict of each outcome recorded
        (an outcome missing from them was fenced out)."""
        if free <= 0 and not outcomes:
            return [], {}
        self._turn += 1
        params = {
            "worker": self.worker_id,
            "queues": self.queues,
            "names": self.names,
            "limit": free,  # claim() takes nothing for a limit of 0 or less
            "lease": self.lease,
            "start": self._turn,
        }
        if not outcomes:
            rows = await self.link.fetch("task_claim", params)
            return [Claimed(*row) for row in rows], {}
        rows = await self.link.fetch("task_complete_claim", {**params, **outcome_params(outcomes)})
        claimed = [Claimed(r[0], *r[2:]) for r in rows if r[1] is None]
        return claimed, {int(r[0]): str(r[1]) for r in rows if r[1] is not None}
