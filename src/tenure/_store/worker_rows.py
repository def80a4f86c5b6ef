"""What the worker's statements take and return, as frozen dataclasses.

Rules:
- Only :mod:`tenure._store.worker` builds these from result rows; everything else
  reads fields by name, never a column by position.
- Task ids are ``int``, worker ids ``UUID``, durations seconds as ``float``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tenure.states import Reported, Verdict


@dataclass(frozen=True, slots=True)
class Claimed:
    """A task the claim handed over: this worker now holds the lease of ``attempt``."""

    id: int
    task_name: str
    queue: str
    payload: str  # JSON text: the task's type parses and validates it in one pass
    attempt: int
    errors: int
    crashes: int
    schedule: str | None = None  # the schedule that sent it
    schedule_tick: datetime | None = None  # the tick it was sent for


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as the worker writes it (fenced on task, attempt, owner)."""

    task_id: int
    attempt: int
    outcome: Reported
    result: str | None = None  # JSON text
    error: str | None = None
    delay: float = 0.0  # seconds before a retry
    slow: tuple[float, float] | None = None  # slow its rate limits: (share, seconds)


@dataclass(frozen=True, slots=True)
class Settled:
    """What the database made of one outcome this worker still owned.

    An outcome with no verdict was fenced out: another owner holds the task."""

    task_id: int
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """One claim's answer: the tasks claimed, the verdicts of the outcomes it wrote,
    and, when a rate limit held work back, the seconds until it can pay for more."""

    claimed: list[Claimed]
    verdicts: list[Settled]
    rate_wait: float | None = None


@dataclass(frozen=True, slots=True)
class Renewal:
    """One heartbeat's answer."""

    registered: bool  # the worker row exists (it was updated)
    renewed: frozenset[int]  # held tasks whose lease was renewed; the others were lost
    idle_elsewhere: int  # free slots of the other live workers serving these queues
    orphans_released: int  # rows owned but never received, handed back
    cancel_requested: list[int]  # renewed tasks an operator asked to cancel
    drain_requested: bool  # an operator asked this worker to drain
    surrendered_kept: frozenset[int]  # surrendered tasks whose row still names this worker


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    """A lease the reaper found expired: ``requeued`` or ``quarantined``."""

    task_id: int
    verdict: str


@dataclass(frozen=True, slots=True)
class Promoted:
    """Due scheduled tasks moved into one queue."""

    queue: str
    count: int


@dataclass(frozen=True, slots=True)
class DeadRows:
    """The hot table's dead and live row versions, and whether this role may vacuum it."""

    dead: int
    live: int
    may_vacuum: bool


@dataclass(frozen=True, slots=True)
class Published:
    """Settings rows a limits or queues sync changed, and waiting rows it flagged."""

    changed: int
    flagged: int


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """One queue, from the hot table: due, scheduled and running tasks, and the age in
    seconds of the oldest due one (None when none is due)."""

    queue: str
    queued: int
    scheduled: int
    running: int
    oldest_age: float | None


@dataclass(frozen=True, slots=True)
class DueSchedule:
    """A schedule due now (a tick, or a run asked for), as the worker plans from it."""

    name: str
    task_name: str
    cron: str | None
    every: timedelta | None
    timezone: str
    catch_up: str
    max_catch_up: int
    jitter: timedelta
    next_tick: datetime | None
    last_tick: datetime | None
    updated_at: datetime  # the definition's version, which a fire must still match
    now: datetime  # the database clock


@dataclass(frozen=True, slots=True)
class SchedulesDue:
    """The due schedules, and in how many seconds the next other one is due."""

    due: list[DueSchedule]
    next_in: float | None


@dataclass(frozen=True, slots=True)
class Fired:
    """What one tick did: ``sent``, ``triggered`` (a task) or ``skipped_running``."""

    tick: datetime
    task_id: int | None
    outcome: str


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """One schedule as /metrics shows it."""

    name: str
    next_in: float | None  # seconds until its next tick; None: not computed, or paused
    last_tick: float | None  # Unix time of its last tick
    missed: int
    paused: bool
