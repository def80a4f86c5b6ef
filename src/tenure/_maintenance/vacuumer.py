"""Vacuumer: keeps the hot table's dead index entries from piling up during a burn-down.

Every claim leaves a dead entry at the head of the claim index and every completion
a dead row; until a vacuum removes them, each claim walks over them, and a long
drain slows as it goes. Autovacuum looks at a database only once a minute, far too
seldom for a queue that turns over thousands of rows a second. So every worker
checks the table's dead rows every few seconds (one cheap statistics read) and,
past ``DEAD_MIN`` and ``DEAD_FRACTION`` of the live rows, vacuums it.

Rules:
- ``VACUUM (SKIP_LOCKED)``: if another worker or autovacuum is already at it, this
  pass skips at once instead of queueing behind it.
- The vacuum runs on a connection opened for it and closed after, never on the
  heartbeat's: a long vacuum must not delay lease renewals.
- Only the table's owner (or the database's) may vacuum it; for any other role
  PostgreSQL skips the table with a warning. So a worker running as a role granted
  only DML does not try: it says once why it cannot and leaves the table to
  autovacuum, which keeps working.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from tenure._store.worker import AsyncStore
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.service import Service

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = timedelta(seconds=10)
DEAD_MIN = 10_000
DEAD_FRACTION = 0.2


@dataclass(frozen=True)
class VacuumResult:
    dead: int
    live: int
    vacuumed: bool
    seconds: float = 0.0
    permitted: bool = True


class Vacuumer(Service):
    name = "vacuumer"

    def __init__(
        self, store: AsyncStore, interval: timedelta = DEFAULT_INTERVAL, clock: Clock = MONOTONIC
    ) -> None:
        super().__init__(interval.total_seconds(), jitter=0.5, clock=clock)
        self.store = store
        self.table = store.tasks_table
        self._refusal_logged = False

    async def run_once(self) -> VacuumResult:
        rows = await self.store.dead_rows()
        dead, live, permitted = rows.dead, rows.live, rows.may_vacuum
        if dead < max(DEAD_MIN, DEAD_FRACTION * live):
            return VacuumResult(dead, live, vacuumed=False, permitted=permitted)
        if not permitted:
            if not self._refusal_logged:
                log.warning(
                    "tasks_vacuum_skipped table=%s dead=%d: this role does not own the table "
                    "and only its owner may vacuum it; autovacuum still does, later. Run "
                    "workers as the schema's owner to have them vacuum a burn-down at once",
                    self.table,
                    dead,
                )
                self._refusal_logged = True
            return VacuumResult(dead, live, vacuumed=False, permitted=False)
        self._refusal_logged = False
        started = self.clock.now()
        await self.store.vacuum()
        seconds = self.clock.now() - started
        log.info("tasks_vacuumed dead=%d live=%d seconds=%.2f", dead, live, seconds)
        return VacuumResult(dead, live, vacuumed=True, seconds=seconds)
