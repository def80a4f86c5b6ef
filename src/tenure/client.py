"""The client: the synchronous side that sends tasks and looks them up.

A :class:`Client` holds one autocommit connection (opened on first use, reopened
if it broke before a statement was sent) and migrates its schema the first time it
connects; one made with ``migrate=False`` (the operator commands, the dashboard)
never changes the schema and refuses in one line one that is missing, older than
this code or unreadable. ``send`` commits before it returns, unless the caller passes its own
psycopg connection, in which case the task joins the caller's transaction.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from tenure._db import connect as dbconnect
from tenure._db import sqlfiles
from tenure._db.migrate import check_ready, migrate
from tenure._untrusted import inert
from tenure.errors import (
    ConfigError,
    DatabaseError,
    QueueNotFound,
    ResultTimeout,
    SchemaNotReady,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
)
from tenure.options import TaskOptions


@dataclass(frozen=True)
class TaskInfo:
    """A snapshot of one task, waiting, running or finished."""

    id: int
    task_name: str
    queue: str
    state: str
    attempt: int
    errors: int
    crashes: int
    priority: int
    partition_key: str | None
    payload: Any
    last_error: str | None
    result: Any
    created_at: datetime
    finished_at: datetime | None

    @property
    def error(self) -> str | None:
        """The task's error as it stands: see :func:`standing_error`."""
        return standing_error(self.state, self.last_error)


def standing_error(state: str, last_error: str | None) -> str | None:
    """A task's error as it stands now: ``last_error``, except for a task that
    succeeded, whose earlier attempts' errors belong to those attempts (see
    :meth:`Client.attempts`), not to the task."""
    return None if state == "succeeded" else last_error


TASK_STATES = (
    "scheduled",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "quarantined",
)
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "quarantined"})

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


def task_fields(r: tuple[Any, ...]) -> dict[str, Any]:
    """One row of :meth:`Client.list_tasks` by name, its error as it stands
    (:func:`standing_error`)."""
    return {
        "id": r[0],
        "task": r[1],
        "queue": r[2],
        "state": r[3],
        "attempt": r[4],
        "errors": r[5],
        "crashes": r[6],
        "priority": r[7],
        "partition_key": r[8],
        "created_at": r[9],
        "finished_at": r[10],
        "last_error": standing_error(r[3], r[11]),
    }


def queue_fields(q: tuple[Any, ...]) -> dict[str, Any]:
    """One row of :meth:`Client.queue_counts` by name, as ``tenure status --json`` and
    the dashboard show it."""
    return {
        "queue": str(q[0]),
        "queued": int(q[1]),
        "queued_estimated": bool(q[13]),
        "scheduled": int(q[2]),
        "scheduled_estimated": bool(q[14]),
        "running": int(q[3]),
        "expired": int(q[4]),
        "failed": int(q[5]),
        "quarantined": int(q[6]),
        "cancelled": int(q[7]),
        "finished_estimated": bool(q[15]),
        "oldest_seconds": None if q[8] is None else float(q[8]),
        "max_concurrency": q[9],
        "max_concurrency_per_key": q[10],
        "weight": int(q[11]),
        "paused": bool(q[12]),
    }


LATE_HEARTBEAT_SECONDS = 30.0
"""A worker not gone whose heartbeat is older than this is late: what it last reported
(held, running) is no longer shown as what it does now."""


def reports_live(state: str, heartbeat_age_seconds: float) -> bool:
    """Whether a worker's own counts (held, running) describe it now: it is not gone
    and its heartbeat is not late."""
    return state != "gone" and heartbeat_age_seconds <= LATE_HEARTBEAT_SECONDS


SCHEMA_ENV = "TENURE_SCHEMA"
DEFAULT_SCHEMA = "tenure"
"""tenure's schema when neither ``schema=`` nor ``TENURE_SCHEMA`` names one."""


def default_schema() -> str:
    """The schema a Registry, a Client and every command use when none is given:
    ``TENURE_SCHEMA``, else ``tenure``."""
    return os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA


@dataclass(frozen=True)
class SchemaSummary:
    """One tenure schema of a database, as the listing of schemas shows it."""

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


def tenure_schemas(conn: psycopg.Connection[Any], *, cap: int = 10_000) -> list[SchemaSummary]:
    """The tenure schemas of the database ``conn`` is on, busiest first (live workers,
    then tasks, counted up to ``cap`` per table). One this role cannot read, or whose
    name is not one tenure would make, comes last, without counts."""
    found = []
    for name, usable in conn.execute(sqlfiles.query("tenure_schemas", DEFAULT_SCHEMA)):
        row = None
        try:
            if usable:
                summary = sqlfiles.query("schema_summary", name)  # ConfigError: odd name
                row = conn.execute(summary, {"cap": cap}).fetchone()
        except (ConfigError, psycopg.Error):  # a table this role may not read, say
            row = None
        if row is None:
            found.append(SchemaSummary(str(name), None, None))
        else:
            found.append(SchemaSummary(str(name), int(row[0]), int(row[1]), bool(row[2])))
    return sorted(found, key=lambda s: (-(s.live_workers or -1), -(s.tasks or -1), s.name))


def _not_found(conn: psycopg.Connection[Any], schema: str, error: SchemaNotReady) -> Exception:
    """``error``; when ``schema`` is no tenure schema at all, with the tenure schemas
    this database does hold."""
    try:
        found = tenure_schemas(conn)
    except psycopg.Error:
        return error
    if not found or any(s.name == schema for s in found):  # unreadable, or behind
        return error
    head = str(error).split(";")[0]  # "no tenure schema 'x' in this database", or so
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    return SchemaNotReady(
        f"{head}; check --schema (or pass --app MODULE:REGISTRY, or set {SCHEMA_ENV}): "
        f"tenure schemas in this database: {', '.join(map(str, found[:10]))}{more}"
    )


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
        self.schema = sqlfiles.check_schema(default_schema() if schema is None else schema)
        self.migrates = migrate
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    @property
    def configured_dsn(self) -> str | None:
        """The DSN given to this client (or resolved once it connected); None means
        TENURE_DATABASE_URL, else the embedded server, at first use."""
        return self._dsn

    @property
    def dsn(self) -> str:
        """The resolved DSN (starting the embedded server if none is configured)."""
        if not self._dsn:  # None, or an empty one that resolve_dsn refuses
            self._dsn = dbconnect.resolve_dsn(self._dsn)
        return self._dsn

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = dbconnect.connect(self.dsn, "tenure-client")
            try:
                if self.migrates:
                    dbconnect.retry_sync(lambda: migrate(conn, self.schema), what="migrate")
                else:
                    try:
                        dbconnect.retry_sync(lambda: check_ready(conn, self.schema), what="schema")
                    except SchemaNotReady as exc:
                        raise _not_found(conn, self.schema, exc) from None
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def open(self) -> None:
        """Connect now (migrating, or checking the schema) instead of at first use."""
        with self._lock:
            self._connection()

    def execute(
        self,
        name: str,
        params: dict[str, Any],
        *,
        connection: psycopg.Connection[Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run the named statement; on the caller's connection when one is given."""
        query = sqlfiles.query(name, self.schema)
        if connection is not None:
            try:
                return connection.execute(query, params).fetchall()
            except psycopg.Error as exc:
                raise DatabaseError(f"{name} failed: {dbconnect.describe(exc)}") from exc
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(query, params).fetchall()
            except psycopg.Error as exc:
                # The statement may or may not have committed; never resend it blindly.
                raise DatabaseError(f"{name} failed: {dbconnect.describe(exc)}") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

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
    ) -> int:
        """Insert one task row and return its id (an existing id for a repeated key)."""
        params = _row_params(options, priority, delay, run_at, partition_key)
        params["payload"] = payload_json
        if idempotency_key is None:
            rows = self.execute("task_send", params, connection=connection)
            return int(rows[0][0])
        params["idempotency_key"] = idempotency_key
        rows = self.execute("task_send_idempotent", params, connection=connection)
        if rows:
            return int(rows[0][0])
        existing = self.execute("idempotency_key_get", params, connection=connection)
        if not existing:
            raise DatabaseError(f"idempotency key {idempotency_key!r} vanished; send again")
        return int(existing[0][0])

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
    ) -> list[int]:
        """Insert a batch of task rows in one round trip; return their ids in order."""
        if not payloads_json:
            return []
        params = _row_params(options, priority, delay, run_at, partition_key)
        params["payloads"] = payloads_json
        rows = self.execute("task_send_many", params, connection=connection)
        return [int(i) for i in rows[0][0]]

    def get(self, task_id: int) -> TaskInfo:
        """The task with that id, or :class:`TaskNotFound`."""
        rows = self.execute("task_get", {"id": task_id})
        if not rows:
            raise TaskNotFound(f"no task with id {task_id} in schema {self.schema}")
        return TaskInfo(*rows[0])

    # -- operating on tasks, queues and workers ----------------------------------------

    def cancel(self, task_id: int) -> str:
        """Cancel a task. Waiting: ends ``cancelled`` now. Running: its worker stops it
        and records ``cancelled``. Returns ``cancelled``, ``cancelling``, the state it
        had already ended in, or raises :class:`TaskNotFound`."""
        return self._state_change("task_cancel", task_id)

    def retry(self, task_id: int) -> str:
        """Queue a failed, quarantined or cancelled task again with fresh budgets.
        Returns ``queued``, or the state it is in if it cannot be retried."""
        return self._state_change("task_retry", task_id)

    def _state_change(self, statement: str, task_id: int) -> str:
        state = str(self.execute(statement, {"id": task_id})[0][0])
        if state == "missing":
            raise TaskNotFound(f"no task with id {task_id} in schema {self.schema}")
        return state

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
        params = {"queue": queue, "paused": paused, "create": create, "cap": EXACT_COUNT_CAP}
        if self.execute("queue_set_paused", params):
            return
        known = [str(r[0]) for r in self.execute("queues_known", {"cap": EXACT_COUNT_CAP})]
        shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        name = queue if len(queue) <= 60 else queue[:59] + "…"
        raise QueueNotFound(
            f"no queue {name!r} in schema {self.schema}; known: {shown or 'none'} "
            "(a worker publishes its registry's queues when it starts)"
        )

    def drain_worker(self, worker_id: str) -> bool:
        """Ask a live worker to drain as SIGTERM would; False if no such live worker."""
        return bool(self.execute("worker_request_drain", {"worker": worker_id}))

    def attempts(self, task_id: int) -> list[tuple[Any, ...]]:
        """(attempt, worker, started, ended, outcome, error) for each attempt."""
        return self.execute("task_attempts", {"id": task_id})

    def list_tasks(
        self,
        *,
        queue: str | None = None,
        state: str | None = None,
        task_name: str | None = None,
        partition_key: str | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[tuple[Any, ...]]:
        """Tasks matching the filters, newest first (``before``: ids below it)."""
        return self.execute(
            "tasks_list",
            {
                "queue": queue,
                "state": state,
                "task_name": task_name,
                "partition_key": partition_key,
                "before": before,
                "limit": limit,
            },
        )

    def workers(self, limit: int = 100) -> list[tuple[Any, ...]]:
        return self.execute("workers_list", {"limit": limit})

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
        total = 0
        while True:
            started = time.perf_counter()
            deleted = int(
                self.execute("tasks_prune", {"older_than": older_than, "batch": batch})[0][0]
            )
            if on_batch is not None:
                on_batch(deleted, time.perf_counter() - started)
            total += deleted
            if deleted < batch:
                return total

    def queue_counts(self, *, cap: int = EXACT_COUNT_CAP) -> list[tuple[Any, ...]]:
        """Per queue, what ``tenure status`` shows: (queue, queued, scheduled, running,
        expired, failed, quarantined, cancelled, oldest due age in s, max_concurrency,
        max_concurrency_per_key, weight, paused, queued estimated, scheduled estimated,
        failures estimated).

        Counts are exact up to ``cap`` per queue and state; above it they are the
        planner's estimate and the matching flag is true (the oldest age is then a
        lower bound). Running and expired are always exact. Nothing scans a deep
        backlog or a long history."""
        return self.execute("status_queues", {"cap": cap})

    def key_counts(
        self,
        limit: int,
        *,
        exact_bytes: int = EXACT_SCAN_BYTES,
        sample_percent: float = KEY_SAMPLE_PERCENT,
    ) -> list[tuple[Any, ...]]:
        """The ``limit`` partition keys with the largest backlogs: (queue, key, queued,
        running, queued estimated). Exact while the hot table is at most
        ``exact_bytes``; above, queued counts come from ``sample_percent`` of its pages
        (scaled up) and are flagged as estimates."""
        return self.execute(
            "status_keys",
            {"limit": limit, "exact_bytes": exact_bytes, "sample_pct": sample_percent},
        )

    def wait(self, task_id: int, timeout: float | None = None) -> TaskInfo:
        """Block until the task has finished (LISTEN/NOTIFY, not polling) and return it.

        Raises :class:`ResultTimeout` if ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if dbconnect.behind_transaction_pooler():  # no LISTEN through the pooler: poll
            return self._poll(task_id, deadline, timeout)
        channel = sql.Identifier(sqlfiles.channel_name(self.schema) + "_done")
        with dbconnect.connect(self.dsn, "tenure-result") as conn:
            conn.execute(sql.SQL("LISTEN {}").format(channel))
            conn.execute(sqlfiles.query("result_waiter_add", self.schema), {"id": task_id})
            try:
                return self._wait_on(conn, task_id, deadline, timeout)
            finally:
                if not conn.broken:
                    conn.execute(
                        sqlfiles.query("result_waiter_remove", self.schema), {"id": task_id}
                    )

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

    def _wait_on(
        self,
        conn: psycopg.Connection[Any],
        task_id: int,
        deadline: float | None,
        timeout: float | None,
    ) -> TaskInfo:
        while True:
            found = self._finished_or_wait(task_id, deadline, timeout, 30.0)
            if isinstance(found, TaskInfo):
                return found
            for note in conn.notifies(timeout=found):
                if not note.payload or str(task_id) in note.payload.split(","):
                    break

    def result(self, task_id: int, timeout: float | None = None) -> Any:
        """The task's stored return value once it succeeded; raises
        :class:`TaskFailed` / :class:`TaskCancelled` if it did not."""
        info = self.wait(task_id, timeout)
        if info.state == "succeeded":
            return info.result
        if info.state == "cancelled":
            raise TaskCancelled(task_id, info.state, info.last_error)
        raise TaskFailed(task_id, info.state, info.last_error)


def _row_params(
    options: TaskOptions,
    priority: int | None,
    delay: timedelta | None,
    run_at: datetime | None,
    partition_key: str | None,
) -> dict[str, Any]:
    return {
        "name": options.name,
        "queue": options.queue,
        "priority": options.priority if priority is None else priority,
        "partition_key": partition_key or "",
        "max_attempts": options.max_attempts,
        "max_crashes": options.max_crashes,
        "limited": options.limited,
        "lease": options.lease,
        "run_at": run_at,
        "delay": delay or timedelta(0),
    }
