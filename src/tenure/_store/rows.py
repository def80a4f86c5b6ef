"""The rows the client, CLI and dashboard read, as frozen dataclasses.

Rules:
- Each class names the statement (``queries/<name>.sql``) whose rows it holds, and
  its fields are that statement's column names: the store reads rows with psycopg's
  ``class_row``, by name, so a column renamed, added or dropped on one side only
  fails at the first read instead of shifting the others.
- The SQL returns each column as the type its field declares: ages in seconds as
  ``float8``, worker ids as ``text``; a task's state becomes a
  :class:`~tenure.states.TaskState`.
- ``as_json()`` is the object ``--json`` prints and the dashboard starts from: its
  keys are a stable contract, written once here (timestamps stay ``datetime``; the
  JSON writer prints them in ISO 8601).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tenure._untrusted import inert
from tenure.states import TaskState

LATE_HEARTBEAT_SECONDS = 30.0
"""A worker not gone whose heartbeat is older than this is late: what it last reported
(held, running) is no longer shown as what it does now."""


def standing_error(state: str, last_error: str | None) -> str | None:
    """A task's error as it stands now: ``last_error``, except for a task that
    succeeded, whose earlier attempts' errors belong to those attempts (see
    :meth:`tenure.client.Client.attempts`), not to the task."""
    return None if state == TaskState.SUCCEEDED else last_error


def reports_live(state: str, heartbeat_age_seconds: float) -> bool:
    """Whether a worker's own counts (held, running) describe it now: it is not gone
    and its heartbeat is not late."""
    return state != "gone" and heartbeat_age_seconds <= LATE_HEARTBEAT_SECONDS


# -- tasks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks a listing shows (``tasks_list``): None matches every task;
    ``before``: only ids below it (the next page)."""

    queue: str | None = None
    state: str | None = None
    task_name: str | None = None
    partition_key: str | None = None
    before: int | None = None
    limit: int = 50


@dataclass(frozen=True)
class TaskRow:
    """One task of a listing (``tasks_list``): no payload or result."""

    id: int
    task_name: str
    queue: str
    state: TaskState
    attempt: int
    errors: int
    crashes: int
    priority: int
    partition_key: str | None
    created_at: datetime
    finished_at: datetime | None
    last_error: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", TaskState(self.state))

    @property
    def error(self) -> str | None:
        """The task's error as it stands: see :func:`standing_error`."""
        return standing_error(self.state, self.last_error)

    def as_json(self) -> dict[str, Any]:
        """The task as ``tenure tasks list --json`` prints it, its error as it stands."""
        return {
            "id": self.id,
            "task": self.task_name,
            "queue": self.queue,
            "state": self.state,
            "attempt": self.attempt,
            "errors": self.errors,
            "crashes": self.crashes,
            "priority": self.priority,
            "partition_key": self.partition_key,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "last_error": self.error,
        }


@dataclass(frozen=True)
class TaskInfo(TaskRow):
    """A snapshot of one task, waiting, running or finished, with its payload and
    result (``task_get``)."""

    payload: Any
    result: Any

    def as_json(self) -> dict[str, Any]:
        """The task as ``tenure tasks show --json`` prints it."""
        return {**super().as_json(), "payload": self.payload, "result": self.result}


@dataclass(frozen=True)
class AttemptRow:
    """One attempt of a task (``task_attempts``), oldest first."""

    attempt: int
    worker_id: str
    started_at: datetime
    ended_at: datetime
    outcome: str
    error: str | None

    @property
    def seconds(self) -> float:
        """How long it ran."""
        return (self.ended_at - self.started_at).total_seconds()

    def as_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "worker": self.worker_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "seconds": self.seconds,
            "outcome": self.outcome,
            "error": self.error,
        }


@dataclass(frozen=True)
class RetryResult:
    """What retrying a task did (``task_retry``): queued it again, or nothing, because
    it is in ``state`` (only :data:`~tenure.states.RETRYABLE_STATES` are retried)."""

    id: int
    requeued: bool
    state: TaskState


# -- queues, keys and limits ---------------------------------------------------------


@dataclass(frozen=True)
class QueueStatus:
    """One queue as ``tenure status`` shows it (``status_queues``).

    Counts are exact up to the statement's cap per queue and state, else the
    planner's estimate with the matching ``*_estimated`` flag set (the oldest age is
    then a lower bound); ``finished_estimated`` covers failed, quarantined and
    cancelled. Running and expired are always exact."""

    queue: str
    queued: int
    scheduled: int
    running: int
    expired: int
    failed: int
    quarantined: int
    cancelled: int
    oldest_seconds: float | None
    max_concurrency: int | None
    max_concurrency_per_key: int | None
    weight: int
    paused: bool
    queued_estimated: bool
    scheduled_estimated: bool
    finished_estimated: bool

    @property
    def waiting(self) -> int:
        """Tasks in the queue now: queued, scheduled and running."""
        return self.queued + self.scheduled + self.running

    def as_json(self) -> dict[str, Any]:
        """The queue as ``tenure status --json`` prints it and the dashboard shows it."""
        return {
            "queue": self.queue,
            "queued": self.queued,
            "queued_estimated": self.queued_estimated,
            "scheduled": self.scheduled,
            "scheduled_estimated": self.scheduled_estimated,
            "running": self.running,
            "expired": self.expired,
            "failed": self.failed,
            "quarantined": self.quarantined,
            "cancelled": self.cancelled,
            "finished_estimated": self.finished_estimated,
            "oldest_seconds": self.oldest_seconds,
            "max_concurrency": self.max_concurrency,
            "max_concurrency_per_key": self.max_concurrency_per_key,
            "weight": self.weight,
            "paused": self.paused,
        }


@dataclass(frozen=True)
class KeyBacklog:
    """One partition key's backlog (``status_keys``); ``key`` None: tasks sent without
    one. ``estimated``: the queued count comes from a sample of the table's pages."""

    queue: str
    key: str | None
    queued: int
    running: int
    estimated: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "key": self.key,
            "queued": self.queued,
            "queued_estimated": self.estimated,
            "running": self.running,
        }


@dataclass(frozen=True)
class LimitStatus:
    """A fleet-wide task limit and what of it is in use (``status_limits``)."""

    task_name: str
    max_concurrency: int | None
    max_concurrency_per_key: int | None
    running: int

    def as_json(self) -> dict[str, Any]:
        return {
            "task": self.task_name,
            "running": self.running,
            "max_concurrency": self.max_concurrency,
            "max_concurrency_per_key": self.max_concurrency_per_key,
        }


# -- workers -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerReport:
    """What a worker last said of itself, and whether that still describes it."""

    held: int
    running: int
    live: bool

    def as_json(self) -> dict[str, Any]:
        """null counts while they do not describe it now, with the last ones beside."""
        return {
            "reports_live": self.live,
            "held": self.held if self.live else None,
            "running": self.running if self.live else None,
            "last_reported_held": self.held,
            "last_reported_running": self.running,
        }


@dataclass(frozen=True)
class _Worker:
    """The columns every listing of workers has."""

    id: str
    host: str
    pid: int
    state: str
    queues: list[str]
    concurrency: int
    version: str
    held: int
    running: int
    leases: int  # running attempts whose lease it holds, counted from the tasks

    def report_at(self, heartbeat_age_seconds: float) -> WorkerReport:
        """Its own counts, live unless it is gone or its heartbeat is this late."""
        live = reports_live(self.state, heartbeat_age_seconds)
        return WorkerReport(self.held, self.running, live)


@dataclass(frozen=True)
class LiveWorker(_Worker):
    """A worker not gone, as ``tenure status`` shows it (``status_workers``)."""

    heartbeat_age_seconds: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "state": self.state,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "version": self.version,
            "heartbeat_age_seconds": self.heartbeat_age_seconds,
            "leases": self.leases,
            **self.report_at(self.heartbeat_age_seconds).as_json(),
        }


@dataclass(frozen=True)
class WorkerRow(_Worker):
    """A worker, live or gone, as ``tenure workers list`` shows it (``workers_list``)."""

    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    drain_requested: bool


@dataclass(frozen=True)
class DashboardWorker(_Worker):
    """A worker live or gone within the hour, as the dashboard shows it
    (``dashboard_workers``); ages by the database clock."""

    heartbeat_age_seconds: float
    uptime_seconds: float
    drain_requested: bool
    outcomes_pending: int
    outcomes_stalled_seconds: float | None

    @property
    def heartbeat_late(self) -> bool:
        return self.state != "gone" and self.heartbeat_age_seconds > LATE_HEARTBEAT_SECONDS


# -- the dashboard's history ---------------------------------------------------------


@dataclass(frozen=True)
class ServerIdentity:
    """The server a connection reached (``server_identity``): ``host:port`` as the
    server sees itself (``local:<port>`` over a unix socket), whether it is a standby,
    and its version. Behind a pooler or a proxy it names the server, not the proxy."""

    server: str
    in_recovery: bool
    version: str
    synchronous_standbys: bool  # commits wait for a synchronous standby
    clock: datetime  # the server's clock when it answered

    @property
    def role(self) -> str:
        return "standby" if self.in_recovery else "primary"

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "role": self.role,
            "version": self.version,
            "synchronous_standbys": self.synchronous_standbys,
        }


@dataclass(frozen=True)
class Throughput:
    """A queue's last minute (``dashboard_throughput``): tasks finished, and of them
    how many succeeded."""

    queue: str
    finished: int
    succeeded: int


@dataclass(frozen=True)
class MinuteCounts:
    """One queue's minute of the last hour (``dashboard_history``): tasks that arrived
    in it and tasks that finished in it; ``minutes_ago`` 0 is the current minute."""

    queue: str
    minutes_ago: int
    arrived: int
    finished: int


# -- schemas -------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaSummary:
    """One tenure schema of a database, as the listing of schemas shows it
    (``tenure_schemas`` and ``schema_summary``)."""

    name: str
    live_workers: int | None  # None: this role may not read it
    tasks: int | None
    capped: bool = False  # more tasks than counted

    def __str__(self) -> str:
        name = inert(self.name)
        if self.live_workers is None or self.tasks is None:
            return name
        workers = f"{self.live_workers} live worker{'s' if self.live_workers != 1 else ''}"
        tasks = f"{self.tasks:,}{'+' if self.capped else ''} task{'' if self.tasks == 1 else 's'}"
        return f"{name} ({workers}, {tasks})"
