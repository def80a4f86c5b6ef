"""The schedule rows the client, CLI and dashboard read (the rules of
:mod:`tenure._store.rows` hold: fields are the statement's column names), and a
schedule's columns as the statements that write one take them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tenure.schedules import Schedule, When

#: The parameters of a schedule's definition, as ``schedule_write`` takes them;
#: ``schedules_sync`` takes each as an array named in the plural (``names``, ``crons``).
SCHEDULE_PARAMS = (
    "name", "task", "queue", "cron", "every", "zone", "payload", "catch_up", "max_catch_up",
    "jitter", "overlap",
)  # fmt: skip


def schedule_params(schedule: Schedule) -> dict[str, Any]:
    """A schedule's definition by :data:`SCHEDULE_PARAMS`."""
    when = schedule.when
    values = (
        schedule.name, schedule.task_name, schedule.queue, when.cron, when.every,
        when.timezone, schedule.payload_json, schedule.catch_up, schedule.max_catch_up,
        schedule.jitter, schedule.overlap,
    )  # fmt: skip
    return dict(zip(SCHEDULE_PARAMS, values, strict=True))


@dataclass(frozen=True)
class ScheduleRow:
    """A schedule, what it last did and what it does next (``schedules_list``)."""

    name: str
    task_name: str
    queue: str
    cron: str | None
    every_seconds: float | None
    timezone: str
    payload: str  # JSON text
    catch_up: str
    max_catch_up: int
    jitter_seconds: float
    overlap: bool
    source: str  # 'code' or 'operator'
    paused: bool
    next_tick: datetime | None  # None: the next worker to look computes it
    fire_at: datetime
    last_tick: datetime | None
    last_task_id: int | None
    last_fired_at: datetime | None
    missed: int
    triggered: bool  # a run asked for, not sent yet
    last_task_state: str | None  # None: the last task finished (or there is none)

    @property
    def when(self) -> When:
        every = None if self.every_seconds is None else timedelta(seconds=self.every_seconds)
        return When(cron=self.cron, every=every, timezone=self.timezone)

    def upcoming(self, count: int, now: datetime) -> list[datetime]:
        """The next ``count`` ticks from ``next_tick`` (or, not yet computed, after
        ``now``); none while paused."""
        if self.paused:
            return []
        ticks = self.when.after(now)
        first = self.next_tick if self.next_tick is not None else next(ticks)
        found = [first]
        ticks = self.when.after(first)
        while len(found) < count:
            found.append(next(ticks))
        return found

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task_name,
            "queue": self.queue,
            "cron": self.cron,
            "every_seconds": self.every_seconds,
            "timezone": self.timezone,
            "catch_up": self.catch_up,
            "max_catch_up": self.max_catch_up,
            "jitter_seconds": self.jitter_seconds,
            "overlap": self.overlap,
            "source": self.source,
            "paused": self.paused,
            "next_ticks": self.upcoming(3, now),
            "last_tick": self.last_tick,
            "last_task_id": self.last_task_id,
            "last_task_state": self.last_task_state,
            "last_fired_at": self.last_fired_at,
            "missed": self.missed,
            "triggered": self.triggered,
        }


@dataclass(frozen=True)
class TickRow:
    """One recorded tick of a schedule (``schedule_ticks_list``)."""

    tick: datetime
    outcome: str  # 'sent', 'triggered' or 'skipped_running'
    task_id: int | None
    fired_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "tick": self.tick,
            "outcome": self.outcome,
            "task_id": self.task_id,
            "fired_at": self.fired_at,
        }
