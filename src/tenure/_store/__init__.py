"""The store: the only code of the client, CLI and dashboard that knows SQL.

Rules:
- One method per statement (``queries/<name>.sql``), named after it: keyword
  parameters in; frozen dataclasses of :mod:`tenure._store.rows`, or plain values,
  out. No other module of the client, CLI or dashboard knows a statement name, a
  column or a SQL literal.
- Answers that the SQL encodes in words (``retry_task``'s ``unchanged:<state>``, a
  ``missing`` task, the ids in a ``_done`` notification) are decoded here.
- The connection, migration and error rules are :mod:`tenure._store.session`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row, scalar_row

from tenure._db import sqlfiles
from tenure._store.rate_rows import RateRow
from tenure._store.rows import (
    AttemptRow,
    DashboardWorker,
    KeyBacklog,
    LimitStatus,
    LiveWorker,
    MinuteCounts,
    QueueStatus,
    RetryResult,
    ServerIdentity,
    TaskFilter,
    TaskInfo,
    TaskRow,
    Throughput,
    WorkerRow,
)
from tenure._store.schedule_rows import ScheduleRow, TickRow, schedule_params
from tenure._store.session import Session
from tenure.options import TaskOptions
from tenure.rates import Rate
from tenure.schedules import Schedule
from tenure.states import TaskState

Connection = psycopg.Connection[Any]

__all__ = ["Sending", "Store"]


@dataclass(frozen=True)
class Sending:
    """Tasks of one kind about to be sent, all but their payloads: the task's options
    and the call's overrides (None: the task's priority, due now, no partition key)."""

    options: TaskOptions
    priority: int | None = None
    delay: timedelta | None = None
    run_at: datetime | None = None
    partition_key: str | None = None
    cost: int = 1  # rate units each start spends (send_many passes one per payload)

    def params(self) -> dict[str, Any]:
        options = self.options
        return {
            "name": options.name,
            "queue": options.queue,
            "priority": options.priority if self.priority is None else self.priority,
            "partition_key": self.partition_key or "",
            "max_attempts": options.max_attempts,
            "max_crashes": options.max_crashes,
            "limited": options.limited,
            "lease": options.lease,
            "run_at": self.run_at,
            "delay": self.delay or timedelta(0),
            "cost": self.cost,
        }


class Store:
    """The typed statements of one DSN and schema (see :class:`Session` for
    ``migrate``)."""

    def __init__(self, dsn: str | None, *, schema: str, migrate: bool = True) -> None:
        self.session = Session(dsn, schema=schema, migrate=migrate)
        self.schema = self.session.schema

    # -- sending -----------------------------------------------------------------------

    def task_send(self, sending: Sending, *, payload: str, connection: Connection | None) -> int:
        """Insert one task; its id."""
        params = {**sending.params(), "payload": payload}
        (task_id,) = self.session.fetch("task_send", params, scalar_row, connection)
        return int(task_id)

    def task_send_idempotent(
        self, sending: Sending, *, payload: str, key: str, connection: Connection | None
    ) -> int | None:
        """Insert one task under an idempotency key; its id, or None when the key was
        taken (see :meth:`idempotency_key_get`)."""
        params = {**sending.params(), "payload": payload, "idempotency_key": key}
        ids = self.session.fetch("task_send_idempotent", params, scalar_row, connection)
        return int(ids[0]) if ids else None

    def idempotency_key_get(
        self, *, task_name: str, key: str, connection: Connection | None
    ) -> int | None:
        """The id of the task sent under this key, or None."""
        params = {"name": task_name, "idempotency_key": key}
        ids = self.session.fetch("idempotency_key_get", params, scalar_row, connection)
        return int(ids[0]) if ids else None

    def task_send_many(
        self,
        sending: Sending,
        *,
        payloads: list[str],
        costs: list[int] | None,
        connection: Connection | None,
    ) -> list[int]:
        """Insert a batch of tasks in one round trip; their ids in order. ``costs``:
        one per payload (None: each costs the sending's cost)."""
        each = costs if costs is not None else [sending.cost] * len(payloads)
        params = {**sending.params(), "payloads": payloads, "costs": each}
        (ids,) = self.session.fetch("task_send_many", params, scalar_row, connection)
        return [int(i) for i in ids]

    # -- tasks -------------------------------------------------------------------------

    def task_get(self, *, task_id: int) -> TaskInfo | None:
        found = self.session.fetch("task_get", {"id": task_id}, class_row(TaskInfo))
        return found[0] if found else None

    def task_attempts(self, *, task_id: int) -> list[AttemptRow]:
        return self.session.fetch("task_attempts", {"id": task_id}, class_row(AttemptRow))

    def tasks_list(self, which: TaskFilter) -> list[TaskRow]:
        """Tasks matching the filter, newest first."""
        return self.session.fetch("tasks_list", asdict(which), class_row(TaskRow))

    def task_cancel(self, *, task_id: int) -> str | None:
        """``cancelled``, ``cancelling`` or the state it had ended in; None: no such task."""
        (state,) = self.session.fetch("task_cancel", {"id": task_id}, scalar_row)
        return None if state == "missing" else str(state)

    def task_retry(self, *, task_id: int) -> RetryResult | None:
        """What retrying the task did; None: no such task."""
        (answer,) = self.session.fetch("task_retry", {"id": task_id}, scalar_row)
        return retry_answer(task_id, str(answer))

    def tasks_prune(self, *, older_than: timedelta, batch: int) -> int:
        """Delete one batch of finished tasks older than ``older_than``; how many."""
        params = {"older_than": older_than, "batch": batch}
        (deleted,) = self.session.fetch("tasks_prune", params, scalar_row)
        return int(deleted)

    def schedule_ticks_prune(self, *, older_than: timedelta, batch: int) -> int:
        """Delete one batch of schedule ticks recorded before ``older_than``; how many."""
        params = {"older_than": older_than, "batch": batch}
        (deleted,) = self.session.fetch("schedule_ticks_prune", params, scalar_row)
        return int(deleted)

    def rate_buckets_prune(self, *, batch: int) -> int:
        """Delete one batch of rate buckets that are full again, or of a limit no
        longer in force; how many."""
        (deleted,) = self.session.fetch("rate_buckets_prune", {"batch": batch}, scalar_row)
        return int(deleted)

    @contextmanager
    def result_waiter(self, *, task_id: int) -> Iterator[Callable[[float], None]]:
        """Listen, on a connection of its own, for ``task_id`` to finish; yields
        ``wait(seconds)``, which returns once a notice that may concern the task came
        or ``seconds`` passed. Registered as a waiter meanwhile (see ``complete()``)."""
        channel = sqlfiles.channel_name(self.schema) + "_done"
        with self.session.listening(channel) as conn:
            self.session.execute("result_waiter_add", {"id": task_id}, conn)

            def wait(seconds: float) -> None:
                for note in conn.notifies(timeout=seconds):
                    if not note.payload or str(task_id) in note.payload.split(","):
                        break

            try:
                yield wait
            finally:
                if not conn.broken:
                    self.session.execute("result_waiter_remove", {"id": task_id}, conn)

    # -- queues and workers ------------------------------------------------------------

    def queue_set_paused(self, *, queue: str, paused: bool, create: bool, cap: int) -> bool:
        """Pause or resume a queue the database knows (any, with ``create``); False:
        no such queue, nothing changed."""
        params = {"queue": queue, "paused": paused, "create": create, "cap": cap}
        return bool(self.session.fetch("queue_set_paused", params, scalar_row))

    def queues_known(self, *, cap: int) -> list[str]:
        return [str(n) for n in self.session.fetch("queues_known", {"cap": cap}, scalar_row)]

    def worker_request_drain(self, *, worker_id: str) -> bool:
        """Ask a live worker to drain; False: no such live worker."""
        params = {"worker": worker_id}
        return bool(self.session.fetch("worker_request_drain", params, scalar_row))

    def workers_list(self, *, limit: int) -> list[WorkerRow]:
        return self.session.fetch("workers_list", {"limit": limit}, class_row(WorkerRow))

    # -- schedules ---------------------------------------------------------------------

    def schedule_write(self, schedule: Schedule) -> bool:
        """Add or change an operator's schedule; False: code declares that name."""
        return bool(self.session.fetch("schedule_write", schedule_params(schedule), scalar_row))

    def schedule_set_paused(self, *, name: str, paused: bool) -> str | None:
        """Pause or resume a schedule; its source, or None: no such schedule."""
        found = self.session.fetch(
            "schedule_set_paused", {"name": name, "paused": paused}, scalar_row
        )
        return str(found[0]) if found else None

    def schedule_delete(self, *, name: str) -> str | None:
        """Delete a schedule; its source, or None: no such schedule."""
        found = self.session.fetch("schedule_delete", {"name": name}, scalar_row)
        return str(found[0]) if found else None

    def schedule_trigger(self, *, name: str) -> bool:
        """Ask for one run of a schedule now; False: no such schedule."""
        return bool(self.session.fetch("schedule_trigger", {"name": name}, scalar_row))

    def schedules_list(self, *, name: str | None, limit: int) -> list[ScheduleRow]:
        params = {"name": name, "limit": limit}
        return self.session.fetch("schedules_list", params, class_row(ScheduleRow))

    def schedule_ticks_list(self, *, name: str, limit: int) -> list[TickRow]:
        params = {"name": name, "limit": limit}
        return self.session.fetch("schedule_ticks_list", params, class_row(TickRow))

    # -- rate limits -------------------------------------------------------------------

    def rates_list(self, *, name: str | None = None) -> list[RateRow]:
        return self.session.fetch("rates_list", {"name": name}, class_row(RateRow))

    def rate_set(self, *, scope: str, name: str, kind: str, key: str, rate: Rate) -> None:
        params = {"scope": scope, "name": name, "kind": kind, "key": key,
                  "per_second": rate.per_second, "burst": rate.burst}  # fmt: skip
        self.session.fetch("rate_set", params, scalar_row)

    def rate_clear(self, *, scope: str, name: str, kind: str, key: str) -> bool:
        params = {"scope": scope, "name": name, "kind": kind, "key": key}
        return bool(self.session.fetch("rate_clear", params, scalar_row))

    # -- status ------------------------------------------------------------------------

    def status_queues(self, *, cap: int) -> list[QueueStatus]:
        return self.session.fetch("status_queues", {"cap": cap}, class_row(QueueStatus))

    def status_keys(
        self, *, limit: int, exact_bytes: int, sample_percent: float
    ) -> list[KeyBacklog]:
        params = {"limit": limit, "exact_bytes": exact_bytes, "sample_pct": sample_percent}
        return self.session.fetch("status_keys", params, class_row(KeyBacklog))

    def status_limits(self) -> list[LimitStatus]:
        return self.session.fetch("status_limits", {}, class_row(LimitStatus))

    def status_workers(self) -> list[LiveWorker]:
        return self.session.fetch("status_workers", {}, class_row(LiveWorker))

    def server_identity(self) -> ServerIdentity:
        """The server this store's connection reached: which one, primary or standby."""
        (row,) = self.session.fetch("server_identity", {}, class_row(ServerIdentity))
        return row

    # -- the dashboard -----------------------------------------------------------------

    def dashboard_now(self) -> datetime:
        """The database clock, which every age on the dashboard is measured against."""
        (now,) = self.session.fetch("dashboard_now", {}, scalar_row)
        assert isinstance(now, datetime)
        return now

    def dashboard_throughput(self) -> list[Throughput]:
        return self.session.fetch("dashboard_throughput", {}, class_row(Throughput))

    def dashboard_history(self) -> list[MinuteCounts]:
        return self.session.fetch("dashboard_history", {}, class_row(MinuteCounts))

    def dashboard_workers(self, *, limit: int) -> list[DashboardWorker]:
        params = {"limit": limit}
        return self.session.fetch("dashboard_workers", params, class_row(DashboardWorker))

    def dashboard_task_names(self) -> list[str]:
        return [str(n) for n in self.session.fetch("dashboard_task_names", {}, scalar_row)]


def retry_answer(task_id: int, answer: str) -> RetryResult | None:
    """``retry_task``'s answer: ``queued`` (it queued the task again),
    ``unchanged:<state>`` (it did nothing), ``missing`` (None). The functions of an
    earlier release answer the bare state, and ``queued`` for a queued task too."""
    if answer == "missing":
        return None
    if answer == "queued":
        return RetryResult(task_id, True, TaskState.QUEUED)
    return RetryResult(task_id, False, TaskState(answer.removeprefix("unchanged:")))
