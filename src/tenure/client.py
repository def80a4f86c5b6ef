"""The client: the synchronous side that sends tasks and looks them up.

A :class:`Client` holds one autocommit connection (opened on first use, reopened
if it broke before a statement was sent) and migrates its schema the first time it
connects; one made with ``migrate=False`` (the operator commands, the dashboard)
never changes the schema and refuses in one line one that is missing, older than
this code or unreadable. ``send`` commits before it returns, unless the caller passes its own
psycopg connection, in which case the task joins the caller's transaction.

Every statement runs through the client's :class:`~tenure._store.Store`, which
returns typed rows (:mod:`tenure._store.rows`); this module knows no SQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg

from tenure._db import connect as dbconnect
from tenure._store import Sending, Store
from tenure._store.rate_rows import RateRow
from tenure._store.rows import (
    AttemptRow,
    KeyBacklog,
    QueueStatus,
    RetryResult,
    TaskFilter,
    TaskInfo,
    TaskRow,
    WorkerRow,
)
from tenure._store.schedule_rows import ScheduleRow, TickRow
from tenure._store.session import DEFAULT_SCHEMA, SCHEMA_ENV, default_schema
from tenure.errors import (
    ConfigError,
    DatabaseError,
    QueueNotFound,
    ResultTimeout,
    ScheduleNotFound,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
)
from tenure.options import TaskOptions
from tenure.rates import Rate
from tenure.schedules import Schedule
from tenure.states import FINAL_STATES, TaskState

__all__ = [
    "DEFAULT_SCHEMA",
    "EXACT_COUNT_CAP",
    "EXACT_SCAN_BYTES",
    "KEY_SAMPLE_PERCENT",
    "PRUNE_BATCH",
    "SCHEMA_ENV",
    "Client",
    "RetryResult",
    "TaskInfo",
    "default_schema",
]

PRUNE_BATCH = 1000
"""Finished tasks deleted per prune statement (and transaction). Measured on 1,000,000
finished tasks: batches of 1,000 hold their row locks ~35 ms (max ~60 ms), batches of
5,000 ~140 ms (max ~210 ms), for about 30 % more time in all."""
EXACT_COUNT_CAP = 10_000
"""Status counts are exact up to this many tasks per queue and state, estimated above."""
EXACT_SCAN_BYTES = 16 * 2**20
"""The largest hot table that status pages read in full for exact per-key counts."""
KEY_SAMPLE_PERCENT = 1.0
"""The share of a deep hot table's pages sampled to rank partition keys."""


class Client:
    """Sends tasks and reads them back, for one DSN and schema.

    ``schema`` defaults to ``TENURE_SCHEMA``, else ``tenure``. ``migrate=False``: never
    create or upgrade the schema; the first connection checks that it exists, is
    readable and has every migration of this code, and raises
    :class:`~tenure.errors.SchemaNotReady` in one line otherwise (naming the tenure
    schemas the database holds when this one is none of them).
    """

    def __init__(
        self, dsn: str | None = None, *, schema: str | None = None, migrate: bool = True
    ) -> None:
        schema = default_schema() if schema is None else schema
        # Every statement goes through the store; the CLI and the dashboard read more of it.
        self.store = Store(dsn, schema=schema, migrate=migrate)
        self.schema = self.store.schema
        self.migrates = migrate

    @property
    def configured_dsn(self) -> str | None:
        """The DSN given to this client (or resolved once it connected); None means
        TENURE_DATABASE_URL, else the embedded server, at first use."""
        return self.store.session.configured_dsn

    @property
    def dsn(self) -> str:
        """The resolved DSN (starting the embedded server if none is configured)."""
        return self.store.session.dsn

    def open(self) -> None:
        """Connect now (migrating, or checking the schema) instead of at first use."""
        self.store.session.open()

    def close(self) -> None:
        self.store.session.close()

    def send(
        self,
        options: TaskOptions,
        payload_json: str,
        *,
        priority: int | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        partition_key: str | None = None,
        idempotency_key: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
        cost: int = 1,
    ) -> int:
        """Insert one task row and return its id (an existing id for a repeated key)."""
        sending = Sending(options, priority, delay, run_at, partition_key, cost)
        if idempotency_key is None:
            return self.store.task_send(sending, payload=payload_json, connection=connection)
        task_id = self.store.task_send_idempotent(
            sending, payload=payload_json, key=idempotency_key, connection=connection
        )
        if task_id is None:
            task_id = self.store.idempotency_key_get(
                task_name=options.name, key=idempotency_key, connection=connection
            )
        if task_id is None:
            raise DatabaseError(f"idempotency key {idempotency_key!r} vanished; send again")
        return task_id

    def send_many(
        self,
        options: TaskOptions,
        payloads_json: list[str],
        *,
        priority: int | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        partition_key: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
        costs: list[int] | None = None,
    ) -> list[int]:
        """Insert a batch of task rows in one round trip; return their ids in order
        (``costs``: the rate units of each, 1 by default)."""
        if not payloads_json:
            return []
        sending = Sending(options, priority, delay, run_at, partition_key)
        return self.store.task_send_many(
            sending, payloads=payloads_json, costs=costs, connection=connection
        )

    def get(self, task_id: int) -> TaskInfo:
        """The task with that id, or :class:`TaskNotFound`."""
        info = self.store.task_get(task_id=task_id)
        if info is None:
            raise self._not_found(task_id)
        return info

    def _not_found(self, task_id: int) -> TaskNotFound:
        return TaskNotFound(f"no task with id {task_id} in schema {self.schema}")

    # -- operating on tasks, queues and workers ----------------------------------------

    def cancel(self, task_id: int) -> str:
        """Cancel a task. Waiting: ends ``cancelled`` now. Running: its worker stops it
        and records ``cancelled``. Returns ``cancelled``, ``cancelling``, the state it
        had already ended in, or raises :class:`TaskNotFound`."""
        state = self.store.task_cancel(task_id=task_id)
        if state is None:
            raise self._not_found(task_id)
        return state

    def retry(self, task_id: int) -> RetryResult:
        """Queue a failed, quarantined or cancelled task again with fresh budgets.

        Returns what it did: ``requeued`` True when it queued the task again, else
        False with the ``state`` the task is in, which is not one that can be retried
        (:data:`tenure.states.RETRYABLE_STATES`). Raises :class:`TaskNotFound`.

        >>> client.retry(task_id).requeued  # doctest: +SKIP
        True
        """
        done = self.store.task_retry(task_id=task_id)
        if done is None:
            raise self._not_found(task_id)
        return done

    def rates(self, name: str | None = None) -> list[RateRow]:
        """Every rate limit in force (or those of one task or queue name), with its
        buckets now (:class:`~tenure._store.rate_rows.RateRow`)."""
        return self.store.rates_list(name=name)

    def set_rate(
        self,
        rate: Rate | str,
        *,
        task: str | None = None,
        queue: str | None = None,
        key: str | None = None,
        each_key: bool = False,
        burst: float | None = None,
    ) -> Rate:
        """Set a rate limit as an operator: on a ``task`` name or a ``queue``, as a
        whole, for ``each_key`` or for one ``key``. The next claim obeys it, and it
        wins over the code's until :meth:`clear_rate`. Returns the rate set.

        >>> client.set_rate("20/s", task="ocr.page", key="tenant-7")  # doctest: +SKIP
        """
        parsed = Rate.parse(rate, burst=burst)
        self.store.rate_set(**_rate_limit(task, queue, key, each_key), rate=parsed)
        return parsed

    def clear_rate(
        self,
        *,
        task: str | None = None,
        queue: str | None = None,
        key: str | None = None,
        each_key: bool = False,
    ) -> bool:
        """Clear an operator's rate limit (the code's, if any, holds again); False
        when there was none."""
        return self.store.rate_clear(**_rate_limit(task, queue, key, each_key))

    def pause_queue(self, queue: str, *, create: bool = False) -> None:
        """Stop all claims from ``queue`` (running work finishes; tasks stay queued).

        The queue must be one the database knows, as ``tenure status`` lists it: one
        that workers published at start (every queue of their registry), or that has
        tasks, or settings. Otherwise :class:`~tenure.errors.QueueNotFound` names the
        known ones; ``create=True`` pauses a queue no worker has published yet.
        """
        self._set_paused(queue, True, create)

    def resume_queue(self, queue: str, *, create: bool = False) -> None:
        """Let workers claim from ``queue`` again (a known queue, as for pause)."""
        self._set_paused(queue, False, create)

    def _set_paused(self, queue: str, paused: bool, create: bool) -> None:
        if not queue:
            raise ConfigError("queue: name must not be empty")
        cap = EXACT_COUNT_CAP
        if self.store.queue_set_paused(queue=queue, paused=paused, create=create, cap=cap):
            return
        known = self.store.queues_known(cap=cap)
        shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        name = queue if len(queue) <= 60 else queue[:59] + "…"
        raise QueueNotFound(
            f"no queue {name!r} in schema {self.schema}; known: {shown or 'none'} "
            "(a worker publishes its registry's queues when it starts)"
        )

    # -- schedules ---------------------------------------------------------------------

    def write_schedule(self, schedule: Schedule) -> None:
        """Add or change an operator's schedule (``Registry.add_schedule`` checks it
        first); one that code declares is changed in the code."""
        if not self.store.schedule_write(schedule):
            raise ConfigError(
                f"schedule {schedule.name!r} is declared in code (its workers publish it); "
                "change it there, or add yours under another name"
            )

    def schedules(self, name: str | None = None, *, limit: int = 1000) -> list[ScheduleRow]:
        """Every schedule (or the one named), with its last and next ticks."""
        return self.store.schedules_list(name=name, limit=limit)

    def schedule(self, name: str) -> ScheduleRow:
        """The schedule named, or :class:`~tenure.errors.ScheduleNotFound`."""
        found = self.store.schedules_list(name=name, limit=1)
        if not found:
            raise self._no_schedule(name)
        return found[0]

    def schedule_ticks(self, name: str, *, limit: int = 50) -> list[TickRow]:
        """The recorded ticks of a schedule, newest first: what each sent (none for a
        name no schedule has; :meth:`schedule` says whether it exists)."""
        return self.store.schedule_ticks_list(name=name, limit=limit)

    def pause_schedule(self, name: str) -> None:
        """Send no more ticks of the schedule until it is resumed."""
        if self.store.schedule_set_paused(name=name, paused=True) is None:
            raise self._no_schedule(name)

    def resume_schedule(self, name: str) -> None:
        """Tick again, from the first tick after now (the pause is not caught up)."""
        if self.store.schedule_set_paused(name=name, paused=False) is None:
            raise self._no_schedule(name)

    def trigger_schedule(self, name: str) -> None:
        """Send one run of the schedule now (paused or not), by the next worker to look."""
        if not self.store.schedule_trigger(name=name):
            raise self._no_schedule(name)

    def delete_schedule(self, name: str) -> str:
        """Delete the schedule; returns its source: ``code`` means a worker that
        declares it publishes it again when it starts (remove it from the code)."""
        source = self.store.schedule_delete(name=name)
        if source is None:
            raise self._no_schedule(name)
        return source

    def _no_schedule(self, name: str) -> ScheduleNotFound:
        known = [s.name for s in self.store.schedules_list(name=None, limit=21)]
        shown = ", ".join(known[:20]) + (" and more" if len(known) > 20 else "")
        return ScheduleNotFound(
            f"no schedule {name!r} in schema {self.schema}; known: {shown or 'none'}"
        )

    def drain_worker(self, worker_id: str) -> bool:
        """Ask a live worker to drain as SIGTERM would; False if no such live worker."""
        return self.store.worker_request_drain(worker_id=worker_id)

    def attempts(self, task_id: int) -> list[AttemptRow]:
        """Every attempt of the task, oldest first."""
        return self.store.task_attempts(task_id=task_id)

    def list_tasks(
        self,
        *,
        queue: str | None = None,
        state: str | None = None,
        task_name: str | None = None,
        partition_key: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[TaskRow]:
        """Tasks matching the filters, newest first (``before``: ids below it)."""
        which = TaskFilter(queue, state, task_name, partition_key, before, limit)
        return self.store.tasks_list(which)

    def workers(self, limit: int = 100) -> list[WorkerRow]:
        """Workers, live ones first, then the most recently gone."""
        return self.store.workers_list(limit=limit)

    def prune(
        self,
        older_than: timedelta,
        *,
        batch: int = PRUNE_BATCH,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> int:
        """Delete finished tasks (and their attempts and idempotency keys) older than
        ``older_than``; returns how many tasks were deleted.

        Each batch of at most ``batch`` tasks is one statement in its own transaction
        (this client's connection is in autocommit), so its row locks last only as
        long as that statement; rows another session holds are skipped, not waited
        for. ``on_batch(deleted, seconds)`` is called after each batch, e.g. to watch
        the longest one::

            longest = 0.0
            def watch(n: int, s: float) -> None:
                nonlocal longest
                longest = max(longest, s)
            client.prune(timedelta(days=7), on_batch=watch)
        """
        if batch < 1:
            raise ValueError("batch: must be at least 1")

        def one() -> int:
            started = time.perf_counter()
            deleted = self.store.tasks_prune(older_than=older_than, batch=batch)
            if on_batch is not None:
                on_batch(deleted, time.perf_counter() - started)
            return deleted

        return _batches(one, batch)

    def prune_schedule_ticks(self, older_than: timedelta, *, batch: int = PRUNE_BATCH) -> int:
        """Delete the record of schedule ticks older than ``older_than`` (what each
        sent), in batches like :meth:`prune`; returns how many."""
        return _batches(
            lambda: self.store.schedule_ticks_prune(older_than=older_than, batch=batch), batch
        )

    def prune_rate_buckets(self, *, batch: int = PRUNE_BATCH) -> int:
        """Delete the rate buckets that are full again (a missing bucket is a full one)
        or whose limit is gone, in batches; returns how many."""
        return _batches(lambda: self.store.rate_buckets_prune(batch=batch), batch)

    def queue_counts(self, *, cap: int = EXACT_COUNT_CAP) -> list[QueueStatus]:
        """Per queue, what ``tenure status`` shows (see :class:`QueueStatus`).

        Counts are exact up to ``cap`` per queue and state; above it they are the
        planner's estimate and the matching flag is true (the oldest age is then a
        lower bound). Running and expired are always exact. Nothing scans a deep
        backlog or a long history."""
        return self.store.status_queues(cap=cap)

    def key_counts(
        self,
        limit: int,
        *,
        exact_bytes: int = EXACT_SCAN_BYTES,
        sample_percent: float = KEY_SAMPLE_PERCENT,
    ) -> list[KeyBacklog]:
        """The ``limit`` partition keys with the largest backlogs. Exact while the hot
        table is at most ``exact_bytes``; above, queued counts come from
        ``sample_percent`` of its pages (scaled up) and are flagged as estimates."""
        return self.store.status_keys(
            limit=limit, exact_bytes=exact_bytes, sample_percent=sample_percent
        )

    def wait(self, task_id: int, timeout: float | None = None) -> TaskInfo:
        """Block until the task has finished (LISTEN/NOTIFY, not polling) and return it.

        Raises :class:`ResultTimeout` if ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if dbconnect.behind_transaction_pooler():  # no LISTEN through the pooler: poll
            return self._poll(task_id, deadline, timeout)
        with self.store.result_waiter(task_id=task_id) as notified:
            while True:
                found = self._finished_or_wait(task_id, deadline, timeout, 30.0)
                if isinstance(found, TaskInfo):
                    return found
                notified(found)

    def _finished_or_wait(
        self, task_id: int, deadline: float | None, timeout: float | None, cap: float
    ) -> TaskInfo | float:
        """The task if it has finished, else how long to wait before looking again."""
        info = self.get(task_id)
        if info.state in FINAL_STATES:
            return info
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise ResultTimeout(f"task {task_id} is still {info.state} after {timeout:g}s")
        return cap if left is None else min(left, cap)

    def _poll(self, task_id: int, deadline: float | None, timeout: float | None) -> TaskInfo:
        delay = 0.05
        while True:
            found = self._finished_or_wait(task_id, deadline, timeout, delay)
            if isinstance(found, TaskInfo):
                return found
            time.sleep(found)
            delay = min(1.0, delay * 1.5)

    def result(self, task_id: int, timeout: float | None = None) -> Any:
        """The task's stored return value once it succeeded; raises
        :class:`TaskFailed` / :class:`TaskCancelled` if it did not."""
        info = self.wait(task_id, timeout)
        if info.state == TaskState.SUCCEEDED:
            return info.result
        if info.state == TaskState.CANCELLED:
            raise TaskCancelled(task_id, info.state, info.last_error)
        raise TaskFailed(task_id, info.state, info.last_error)


def _batches(one: Callable[[], int], batch: int) -> int:
    """Run ``one`` batch after another until one deletes fewer than ``batch``; the total."""
    total = 0
    while True:
        deleted = one()
        total += deleted
        if deleted < batch:
            return total


def _rate_limit(
    task: str | None, queue: str | None, key: str | None, each_key: bool
) -> dict[str, str]:
    """The rate_limits row a limit is: its scope and name, kind and key."""
    if (task is None) == (queue is None):
        raise ConfigError("a rate limit is on a task or on a queue: give one of task, queue")
    if key is not None and each_key:
        raise ConfigError("a rate limit is for one key or for each key, not both")
    name = task if task is not None else queue
    if not name:
        raise ConfigError("a rate limit needs the name of its task or queue")
    kind = "key" if key is not None else "each" if each_key else "all"
    return {"scope": "task" if task is not None else "queue", "name": name,
            "kind": kind, "key": key or ""}  # fmt: skip
