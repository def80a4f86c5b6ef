"""Unknown tasks: report, once per name, queued tasks that no task of this registry can run.

Such a task stays queued until a worker that registers its name runs; a worker that
serves the queue but not the name says so in its log, once per name per process, so
a typo or a forgotten import shows up without anyone watching the queue. A failed
check is retried at the next interval and logged at DEBUG only.
"""

from __future__ import annotations

import logging

from tenure._store.worker import AsyncStore
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.service import Service

log = logging.getLogger(__name__)

INTERVAL = 60.0


class UnknownTasks(Service):
    name = "unknown_tasks"

    def __init__(
        self,
        store: AsyncStore,
        queues: tuple[str, ...],
        names: list[str],
        interval: float = INTERVAL,
        clock: Clock = MONOTONIC,
    ) -> None:
        super().__init__(interval, jitter=0.0, clock=clock)
        self.store = store
        self.queues = queues
        self.names = names
        self.reported: set[str] = set()

    async def run_once(self) -> list[str]:
        """The names reported in this pass (those not reported before)."""
        found = await self.store.unknown_tasks(queues=self.queues, names=self.names)
        new = [name for name in found if name not in self.reported]
        for name in new:
            self.reported.add(name)
            log.error(
                "task_unknown name=%s: queued in %s but not registered in this worker's "
                "registry; it stays queued until a worker that registers it runs",
                name,
                ",".join(self.queues),
            )
        return new

    def failed(self, exc: Exception) -> None:
        log.debug("unknown task check failed: %s", exc)
