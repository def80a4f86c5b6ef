"""Scheduler: every worker fires the due schedules of its queues; the database sends
each tick once.

Rules:
- Each pass asks which schedules of this worker's queues and tasks are due by the
  database clock, plans each (:func:`tenure.schedules.plan`: the due ticks, the
  catch-up policy, the next tick and its jitter) and asks ``schedule_fire`` to send
  them. That statement sends nothing when another worker holds the schedule or fired
  it first, or when it changed since it was read, so any number of workers may look
  at once and any of them may die at any moment: a tick is sent once, by one of them.
- There is no scheduler process and no leader: while one worker serving the queue is
  alive, ticks are sent. A worker sleeps until the next schedule is due (at most a
  poll interval), so a tick is sent within a statement's time of its moment.
- A fire the database refuses for good (not a lost connection) is reported once and
  the pass goes on with the other schedules; a lost connection ends the pass, and the
  next tries them all again.
- A schedule this worker cannot plan (a timezone this machine does not know, a cron
  expression written by hand that does not parse) is reported once and left to the
  others: this worker reads it no more (until it restarts), so it never stops the
  pass for the rest.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from tenure._db import connect as dbconnect
from tenure._store.worker import AsyncStore
from tenure._store.worker_rows import DueSchedule
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.service import Service
from tenure.errors import DatabaseError
from tenure.schedules import When, plan

if TYPE_CHECKING:
    from tenure.registry import Registry

log = logging.getLogger(__name__)

BATCH = 100  # due schedules read per statement; a full batch looks again at once


@dataclass(frozen=True)
class Pass:
    due: int
    sent: int


class Scheduler(Service):
    name = "scheduler"

    def __init__(
        self,
        store: AsyncStore,
        registry: Registry,
        queues: Sequence[str],
        names: Sequence[str],
        interval: timedelta,
        clock: Clock = MONOTONIC,
    ) -> None:
        super().__init__(interval.total_seconds(), jitter=0.1, clock=clock)
        self.store = store
        self.registry = registry
        self.queues = list(queues)
        self.names = list(names)
        self.counts: Counter[str] = Counter()  # ticks by outcome: sent, triggered, skipped_running
        self._next_in: float | None = None  # seconds until the next schedule is due
        self._unplannable: set[str] = set()
        self._refusals: set[str] = set()  # schedules whose last fire was refused

    def next_delay(self) -> float:
        delay = super().next_delay()
        if self._next_in is None:
            return delay
        return max(0.0, min(delay, self._next_in))

    async def run_once(self) -> Pass:
        found = await self.store.schedules_due(
            queues=self.queues, names=self.names, skip=sorted(self._unplannable), limit=BATCH
        )
        sent = 0
        # Workers that wake for the same second all see the same due schedules: each
        # takes them in an order of its own, so they fire different ones at once
        # instead of queueing behind each other's row locks.
        for due in random.sample(found.due, len(found.due)):
            try:
                sent += await self._fire(due)
            except DatabaseError as exc:
                if dbconnect.is_transient(exc):
                    raise  # the database is away: the next pass tries them all again
                self._refused(due.name, exc)
        self._next_in = 0.0 if len(found.due) == BATCH else found.next_in
        return Pass(len(found.due), sent)

    def _refused(self, name: str, exc: DatabaseError) -> None:
        """The database refused to fire one schedule (not a passing failure): say so
        once, and go on with the others; its next look tries it again."""
        if name not in self._refusals:
            self._refusals.add(name)
            log.error("schedule_fire_refused schedule=%s error=%s", name, exc)

    async def _fire(self, due: DueSchedule) -> int:
        task = self.registry.tasks[due.task_name]
        try:
            when = When(cron=due.cron, every=due.every, timezone=due.timezone)
            planned = plan(
                when,
                next_tick=due.next_tick,
                last_tick=due.last_tick,
                now=due.now,
                catch_up=due.catch_up,
                max_catch_up=due.max_catch_up,
                jitter=due.jitter,
                changed_at=due.updated_at,
            )
        except Exception as exc:  # noqa: BLE001 - one bad schedule must not stop the rest
            if due.name not in self._unplannable:
                self._unplannable.add(due.name)
                log.error(
                    "schedule_unplannable schedule=%s error=%s: %s; this worker leaves it "
                    "to the others (fix it with `tenure schedules add` or in the code)",
                    due.name,
                    type(exc).__name__,
                    exc,
                )
            return 0
        fired = await self.store.schedule_fire(
            due,
            task.options,
            ticks=planned.ticks,
            missed=planned.missed,
            next_tick=planned.next_tick,
            fire_at=planned.fire_at,
        )
        self._refusals.discard(due.name)
        for f in fired:
            self.counts[f.outcome] += 1
            log.debug(
                "schedule_fired schedule=%s tick=%s outcome=%s task=%s",
                due.name,
                f.tick.isoformat(),
                f.outcome,
                f.task_id,
            )
            if f.outcome == "skipped_running":
                log.info(
                    "schedule_skipped schedule=%s tick=%s: the task of its last tick still "
                    "waits or runs (overlap=False)",
                    due.name,
                    f.tick.isoformat(),
                )
        if fired and planned.missed:
            log.warning(
                "schedule_missed schedule=%s missed=%s%d catch_up=%s: ticks passed while no "
                "worker serving its queue ran",
                due.name,
                "≥" if planned.missed_at_least else "",
                planned.missed,
                due.catch_up,
            )
        return sum(1 for f in fired if f.task_id is not None)
