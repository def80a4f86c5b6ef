"""The worker's statements: one typed async method each, on a connection that reopens itself.

Rules:
- This module is the only code of the worker that knows a statement's name, a
  column's position or a SQL literal; callers pass keyword arguments and get the
  frozen rows of :mod:`tenure._store.worker_rows` back.
- Every failure is a :class:`~tenure.errors.DatabaseError` naming the statement, with
  the driver's error as its ``__cause__``, so :func:`tenure._db.connect.is_transient`
  and :func:`~tenure._db.connect.connection_lost` judge it; a connection that broke is
  dropped and opened again by the next statement. Nothing here retries: each caller
  decides what a failure costs it.
- Batches travel as PostgreSQL array literals (:mod:`tenure._db.arrays`): N outcomes
  or leases, one parameter each, one round trip.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tenure._db import arrays, sqlfiles
from tenure._db import connect as dbconnect
from tenure._store.link import Link
from tenure._store.rate_rows import RateRow
from tenure._store.schedule_rows import SCHEDULE_PARAMS, schedule_params
from tenure._store.worker_rows import (
    Claimed,
    ClaimResult,
    DeadRows,
    DueSchedule,
    ExpiredLease,
    Fired,
    Outcome,
    Promoted,
    Published,
    QueueDepth,
    Renewal,
    SchedulesDue,
    ScheduleState,
    Settled,
)
from tenure.errors import DatabaseError
from tenure.options import QueueOptions, TaskOptions
from tenure.schedules import Schedule
from tenure.states import Verdict

log = logging.getLogger(__name__)


def _outcome_params(batch: Sequence[Outcome]) -> dict[str, str]:
    """A batch of outcomes as the array parameters ``complete()`` takes."""
    return {
        "ids": arrays.ints(o.task_id for o in batch),
        "attempts": arrays.ints(o.attempt for o in batch),
        "outcomes": arrays.texts(o.outcome for o in batch),
        "results": arrays.texts(o.result for o in batch),
        "errors": arrays.texts(o.error for o in batch),
        "delays": arrays.floats(o.delay for o in batch),
    }


def rates_sync_params(
    tasks: Sequence[TaskOptions], queues: Sequence[QueueOptions]
) -> dict[str, Any]:
    """``rates_sync``'s parameters: every rate limit these tasks and queues declare, as
    arrays of its columns, and the names whose code rows it replaces."""
    rows = [("task", t.name, *r) for t in tasks for r in t.rates.rows()]
    rows += [("queue", q.name, *r) for q in queues for r in q.rates.rows()]
    columns = ("scopes", "names", "kinds", "keys", "per_second", "bursts")
    params: dict[str, Any] = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
    params["all_tasks"] = [t.name for t in tasks]
    params["all_queues"] = [q.name for q in queues]
    return params


RATE_WAIT = "rate_wait"  # the verdict of a claim's row that is a rate limit's wait


def _claim_result(rows: Sequence[tuple[Any, ...]]) -> ClaimResult:
    """A claim's rows: a claimed task where the verdict is NULL, a rate limit's wait
    where it is 'rate_wait', else an outcome's verdict."""
    claimed = [Claimed(r[0], *r[2:10]) for r in rows if r[1] is None]
    waits = [float(r[10]) for r in rows if r[1] == RATE_WAIT]
    verdicts = _verdicts(r for r in rows if r[1] is not None and r[1] != RATE_WAIT)
    return ClaimResult(claimed, verdicts, min(waits) if waits else None)


def _verdicts(rows: Iterable[tuple[Any, ...]]) -> list[Settled]:
    return [Settled(int(r[0]), Verdict(r[1])) for r in rows]


class AsyncStore:
    """The statements one part of a worker runs, on a connection of its own.

    >>> store = AsyncStore(dsn, "tenure", "heartbeat")
    >>> await store.set_state(worker=worker_id, state="draining")
    """

    def __init__(self, dsn: str, schema: str, name: str) -> None:
        self.link = Link(dsn, schema, name)

    @property
    def schema(self) -> str:
        return self.link.schema

    @property
    def tasks_table(self) -> str:
        """The hot table's qualified name, quoted as SQL quotes it (for log lines)."""
        return sql.Identifier(self.schema, "tasks").as_string()

    @property
    def server(self) -> str | None:
        """The server (``host:port``) this store's last connection reached; None before
        the first."""
        return self.link.server.server if self.link.server else None

    @property
    def clock_offset(self) -> float | None:
        """The seconds the server of the last connection reads ahead of this machine's
        clock (negative: behind), within a round trip; None before the first."""
        return self.link.clock_offset

    def sibling(self, name: str) -> AsyncStore:
        """A store on the same database and schema with a connection of its own."""
        return AsyncStore(self.link.dsn, self.link.schema, name)

    async def close(self) -> None:
        await self.link.close()

    # -- claims and outcomes -------------------------------------------------------

    async def claim(
        self,
        *,
        worker: UUID,
        queues: Sequence[str],
        names: Sequence[str],
        limit: int,
        lease: timedelta,
        start: int,
    ) -> ClaimResult:
        """Claim up to ``limit`` queued tasks of ``names`` in ``queues`` for ``worker``;
        ``start`` rotates which queue goes first."""
        rows = await self.link.fetch(
            "task_claim",
            {
                "worker": worker,
                "queues": list(queues),
                "names": list(names),
                "limit": limit,
                "lease": lease,
                "start": start,
            },
        )
        return _claim_result(rows)

    async def complete(self, *, worker: UUID, outcomes: Sequence[Outcome]) -> list[Settled]:
        """Record ``outcomes``, each fenced on (task, attempt, ``worker``); an outcome
        with no verdict in the answer was fenced out."""
        rows = await self.link.fetch(
            "task_complete_many", {"worker": worker, **_outcome_params(outcomes)}
        )
        return _verdicts(rows)

    async def complete_and_claim(
        self,
        *,
        worker: UUID,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        names: Sequence[str],
        limit: int,
        lease: timedelta,
        start: int,
    ) -> ClaimResult:
        """:meth:`complete`, then :meth:`claim` (a limit of 0 claims nothing), in one
        statement and one commit."""
        rows = await self.link.fetch(
            "task_complete_claim",
            {
                "worker": worker,
                **_outcome_params(outcomes),
                "queues": list(queues),
                "names": list(names),
                "limit": limit,
                "lease": lease,
                "start": start,
            },
        )
        return _claim_result(rows)

    async def rate_slow_down(self, outcomes: Sequence[Outcome]) -> int:
        """Slow the rate limits these outcomes' tasks are under, as each asks; how
        many buckets were slowed."""
        asked = [o for o in outcomes if o.slow is not None]
        rows = await self.link.fetch(
            "rate_slow_down",
            {
                "ids": [o.task_id for o in asked],
                "factors": [o.slow[0] for o in asked if o.slow is not None],
                "seconds": [o.slow[1] for o in asked if o.slow is not None],
            },
        )
        return int(rows[0][0]) if rows else 0

    async def attempts_recorded(self, *, worker: UUID, attempts: Mapping[int, int]) -> list[int]:
        """The tasks among ``attempts`` (task id to attempt) whose attempt ``worker``
        has recorded an outcome for (a write whose answer was lost)."""
        rows = await self.link.fetch(
            "attempts_recorded",
            {"worker": worker, "ids": list(attempts), "attempts": list(attempts.values())},
        )
        return [int(r[0]) for r in rows]

    # -- heartbeat -----------------------------------------------------------------

    async def renew(
        self,
        *,
        worker: UUID,
        state: str,
        held: Mapping[int, int],
        running: int,
        lease: timedelta,
        surrendered: Collection[int],
        orphan_after: timedelta,
        outcomes_pending: int,
        outcomes_stalled: float | None,
    ) -> Renewal:
        """Renew the lease of every held (task, attempt) and publish the worker's state
        and load; hand back rows owned but not held (``surrendered`` ones excepted)
        once they are ``orphan_after`` old."""
        rows = await self.link.fetch(
            "lease_renew_many",
            {
                "worker": worker,
                "state": state,
                "held": len(held),
                "running": running,
                "lease": lease,
                "ids": arrays.ints(held),
                "attempts": arrays.ints(held.values()),
                "surrendered": arrays.ints(surrendered),
                "orphan_after": orphan_after,
                "outcomes_pending": outcomes_pending,
                "outcomes_stalled": outcomes_stalled,
            },
        )
        if not rows:
            return Renewal(False, frozenset(), 0, 0, [], False, frozenset())
        me, renewed, idle, orphans, cancel, drain, kept = rows[0]
        return Renewal(
            registered=bool(me),
            renewed=frozenset(renewed),
            idle_elsewhere=int(idle),
            orphans_released=int(orphans),
            cancel_requested=[int(i) for i in cancel],
            drain_requested=bool(drain),
            surrendered_kept=frozenset(kept),
        )

    async def cancel_requested(self, *, worker: UUID, held: Mapping[int, int]) -> list[int]:
        """The tasks among ``held`` (task id to attempt, owned by ``worker``) whose row
        asks for a cancel."""
        rows = await self.link.fetch(
            "tasks_cancel_requested",
            {
                "worker": worker,
                "ids": arrays.ints(held),
                "attempts": arrays.ints(held.values()),
            },
        )
        return [int(r[0]) for r in rows]

    # -- the worker's own row and what it publishes -------------------------------

    async def register(
        self,
        *,
        worker: UUID,
        host: str,
        pid: int,
        queues: Sequence[str],
        concurrency: int,
        version: str,
    ) -> None:
        """Insert (or revive) the worker's row as ``active``."""
        await self.link.fetch(
            "worker_register",
            {
                "worker": worker,
                "host": host,
                "pid": pid,
                "queues": list(queues),
                "concurrency": concurrency,
                "version": version,
            },
        )

    async def set_state(self, *, worker: UUID, state: str) -> None:
        """Set the worker row's state: ``active``, ``draining`` or ``gone``."""
        await self.link.fetch("worker_set_state", {"worker": worker, "state": state})

    async def publish_limits(self, tasks: Sequence[TaskOptions]) -> Published:
        """Publish these tasks' fleet-wide limits, lifting those they no longer declare."""
        rows = await self.link.fetch(
            "limits_sync",
            {
                "names": [t.name for t in tasks],
                "limits": [t.max_concurrency for t in tasks],
                "per_key": [t.max_concurrency_per_key for t in tasks],
            },
        )
        return _published(rows)

    async def publish_queues(self, queues: Sequence[QueueOptions]) -> Published:
        """Publish these queues' weights, limits and key weights (a pause stays)."""
        rows = await self.link.fetch(
            "queues_sync",
            {
                "names": [q.name for q in queues],
                "weights": [q.weight for q in queues],
                "limits": [q.max_concurrency for q in queues],
                "per_key": [q.max_concurrency_per_key for q in queues],
                "key_weights": [Jsonb(q.key_weights) for q in queues],
            },
        )
        return _published(rows)

    async def publish_rates(
        self, tasks: Sequence[TaskOptions], queues: Sequence[QueueOptions]
    ) -> tuple[int, int]:
        """Publish the rate limits of these tasks and declared queues, lifting those
        they no longer declare (an operator's stay): how many changed, how many went."""
        params = rates_sync_params(tasks, queues)
        ((changed, removed),) = await self.link.fetch("rates_sync", params)
        return int(changed), int(removed)

    async def publish_schedules(
        self, schedules: Sequence[Schedule], *, tasks: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        """Publish these schedules declared in code; remove the code schedules of
        ``tasks`` not among them. The names changed (or added), and the names removed."""
        each = [schedule_params(s) for s in schedules]
        arrays = {f"{key}s": [p[key] for p in each] for key in SCHEDULE_PARAMS}
        rows = await self.link.fetch("schedules_sync", {**arrays, "all_tasks": list(tasks)})
        changed, removed = rows[0]
        return list(changed), list(removed)

    async def schedules_due(
        self, *, queues: Sequence[str], names: Sequence[str], skip: Sequence[str], limit: int
    ) -> SchedulesDue:
        """The schedules of these queues and tasks that are due, the longest due first;
        none named in ``skip``."""
        rows = await self.link.fetch(
            "schedules_due",
            {"queues": list(queues), "names": list(names), "skip": list(skip), "limit": limit},
        )
        due = [DueSchedule(*r[:12]) for r in rows if r[0] is not None]
        waits = [r[12] for r in rows if r[0] is None and r[12] is not None]
        return SchedulesDue(due, float(waits[0]) if waits else None)

    async def schedule_fire(
        self,
        due: DueSchedule,
        options: TaskOptions,
        *,
        ticks: Sequence[datetime],
        missed: int,
        next_tick: datetime,
        fire_at: datetime,
    ) -> list[Fired]:
        """Send these ticks of a due schedule and move it on, once (see
        ``schedule_fire``): nothing when another worker fired it or it changed."""
        rows = await self.link.fetch(
            "schedule_fire",
            {
                "name": due.name,
                "expected": due.next_tick,
                "version": due.updated_at,
                "ticks": list(ticks),
                "missed": missed,
                "next": next_tick,
                "fire_at": fire_at,
                "max_attempts": options.max_attempts,
                "max_crashes": options.max_crashes,
                "priority": options.priority,
                "lease": options.lease,
                "limited": options.limited,
            },
        )
        return [Fired(r[0], r[1], r[2]) for r in rows]

    async def flag_limited_running(self) -> None:
        """Flag the running rows a published limit applies to."""
        await self.link.fetch("limits_flag_running", {})

    async def unknown_tasks(self, *, queues: Sequence[str], names: Sequence[str]) -> list[str]:
        """Task names queued in ``queues`` that are not among ``names`` (at most 20)."""
        rows = await self.link.fetch(
            "tasks_unknown", {"queues": list(queues), "names": list(names)}
        )
        return [str(r[0]) for r in rows]

    # -- maintenance ---------------------------------------------------------------

    async def expire_leases(self, *, limit: int) -> list[ExpiredLease]:
        """Turn up to ``limit`` expired leases back into work (or quarantine them)."""
        rows = await self.link.fetch("lease_expire_many", {"max": limit})
        return [ExpiredLease(int(r[0]), str(r[1])) for r in rows]

    async def mark_gone(self, *, after: timedelta) -> list[UUID]:
        """Mark gone the workers silent for longer than ``after``; their ids."""
        rows = await self.link.fetch("worker_mark_gone_many", {"after": after})
        return [r[0] for r in rows]

    async def promote_due(self, *, limit: int) -> list[Promoted]:
        """Move up to ``limit`` due scheduled tasks into their queues."""
        rows = await self.link.fetch("task_promote_due", {"max": limit})
        return [Promoted(str(q), int(n)) for q, n in rows]

    async def dead_rows(self) -> DeadRows:
        """The hot table's dead and live rows as the statistics count them."""
        rows = await self.link.fetch("tasks_dead_rows", {"table": self.tasks_table})
        if not rows:
            return DeadRows(0, 0, may_vacuum=True)
        dead, live, permitted = rows[0]
        return DeadRows(int(dead), int(live), bool(permitted))

    async def vacuum(self) -> None:
        """Vacuum the hot table on a connection opened for it and closed after (a long
        vacuum must not hold up this store's other statements)."""
        own = self.sibling("vacuum")
        try:
            await own.link.fetch("tasks_vacuum", {})
        finally:
            await own.close()

    async def queue_depths(self) -> list[QueueDepth]:
        """Per queue: due, scheduled and running tasks and the oldest due one's age."""
        rows = await self.link.fetch("metrics_queues", {})
        return [
            QueueDepth(str(q), int(queued), int(scheduled), int(running), _seconds(age))
            for q, queued, scheduled, running, age in rows
        ]

    async def rate_states(self) -> list[RateRow]:
        """Every rate limit in force and its buckets now (as ``tenure rates list``)."""
        return [RateRow(*row) for row in await self.link.fetch("rates_list", {"name": None})]

    async def schedule_states(self) -> list[ScheduleState]:
        """Per schedule: seconds to its next tick, its last tick, missed ticks, paused."""
        rows = await self.link.fetch("metrics_schedules", {})
        return [
            ScheduleState(str(n), nxt, last, int(missed), bool(p))
            for n, nxt, last, missed, p in rows
        ]

    # -- notifications -------------------------------------------------------------

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[AsyncIterator[str]]:
        """LISTEN on the schema's channel; inside, iterate the payloads that arrive.

        The connection is closed when the block ends; a failure is a DatabaseError."""
        try:
            conn = await self.link.connection()
            channel = sql.Identifier(sqlfiles.channel_name(self.schema))
            await conn.execute(sql.SQL("LISTEN {}").format(channel))
            yield _payloads(conn)
        except psycopg.Error as exc:
            raise DatabaseError(dbconnect.describe(exc)) from exc
        finally:
            await self.close()


async def _payloads(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[str]:
    async for note in conn.notifies():
        yield note.payload


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def _published(rows: list[tuple[Any, ...]]) -> Published:
    changed, flagged = rows[0] if rows else (0, 0)
    return Published(int(changed), int(flagged))
