"""Claimer: takes up to the free slots in one statement.

The claim function in the database does the choosing (``FOR UPDATE SKIP LOCKED``,
fleet-wide limits, a fair share per queue) and sets owner, attempt and the lease
expiry from the database clock. The claimer asks for exactly the free slots, only
for task names this worker can run, and rotates which queue goes first.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

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

    async def run_once(self, free: int) -> list[Claimed]:
        """Claim up to ``free`` tasks; returns what this worker now holds leases on."""
        if free <= 0:
            return []
        self._turn += 1
        rows = await self.link.fetch(
            "task_claim",
            {
                "worker": self.worker_id,
                "queues": self.queues,
                "names": self.names,
                "limit": free,
                "lease": self.lease,
                "start": self._turn,
            },
        )
        return [Claimed(*row) for row in rows]
