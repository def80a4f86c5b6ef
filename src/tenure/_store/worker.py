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
import os
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tenure._db import arrays, sqlfiles
from tenure._db import connect as dbconnect
from tenure._store.rows import ServerIdentity
from tenure._store.worker_rows import (
    Claimed,
    ClaimResult,
    DeadRows,
    ExpiredLease,
    Outcome,
    Promoted,
    Published,
    QueueDepth,
    Renewal,
    Settled,
)
from tenure.errors import DatabaseError
from tenure.options import QueueOptions, TaskOptions
from tenure.states import Verdict

log = logging.getLogger(__name__)


DURABILITY_CHECK_S = 10.0


class _Durability:
    """Whether this process's database has been seen with synchronous standbys."""

    synchronous = False


DURABILITY = _Durability()


class Link:
    """A named, lazily (re)opened asyncio connection: one per part of the worker.

    Its commits are asynchronous (``synchronous_commit = off``) unless the database
    waits for synchronous standbys: delivery is at-least-once, so a claim, renewal or
    outcome lost in a database crash only means the task runs again, and not waiting
    for each WAL flush is what lets a fleet go fast. A database with synchronous
    standbys was set up so that nothing acknowledged is lost in a failover: there the
    worker's commits wait like every other (``send``'s always do). An HA manager
    clears ``synchronous_standby_names`` for a moment around a failover (a new primary
    has no standby yet), so the answer is sticky: once any link of this process has
    seen synchronous standbys (each checks at connect and, until then, every
    :data:`DURABILITY_CHECK_S`), every link commits synchronously from its next
    statement on. Behind a pooler in transaction mode no session setting is made;
    set it per role there.
    """

    def __init__(self, dsn: str, schema: str, name: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.name = name
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.server: ServerIdentity | None = None  # what the last connection reached
        self.clock_offset: float | None = None  # its clock minus ours, in seconds
        self._asynchronous = False  # this session commits with synchronous_commit = off
        self._checked_at = 0.0  # monotonic time of the last look at the standbys

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = await dbconnect.aconnect(self.dsn, f"tenure-{self.name}-{os.getpid()}")
            try:
                self.server = await self._identify(conn)
                self._checked_at = time.monotonic()
                self._asynchronous = False
                if not DURABILITY.synchronous and not dbconnect.behind_transaction_pooler():
                    await conn.execute("SET synchronous_commit = off")
                    self._asynchronous = True
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        elif self._asynchronous:
            await self._recheck_durability(self._conn)
        return self._conn

    async def _recheck_durability(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Commit synchronously from now on once this process has seen synchronous
        standbys (looking again every DURABILITY_CHECK_S until then)."""
        if not DURABILITY.synchronous and time.monotonic() - self._checked_at >= DURABILITY_CHECK_S:
            self._checked_at = time.monotonic()
            try:
                cur = await conn.execute("SELECT current_setting('synchronous_standby_names')")
                row = await cur.fetchone()
            except psycopg.Error as exc:
                await self._drop_if_broken(conn, exc)
                raise DatabaseError(f"{self.name} link: {dbconnect.describe(exc)}") from exc
            if row is not None and row[0]:
                DURABILITY.synchronous = True
        if DURABILITY.synchronous:
            try:
                await conn.execute("SET synchronous_commit = DEFAULT")
            except psycopg.Error as exc:
                await self._drop_if_broken(conn, exc)
                raise DatabaseError(f"{self.name} link: {dbconnect.describe(exc)}") from exc
            self._asynchronous = False

    async def _identify(self, conn: psycopg.AsyncConnection[Any]) -> ServerIdentity:
        """Which server ``conn`` reached; a standby (a DSN or proxy that still points
        at the old primary after a failover) is refused as a transient failure, so the
        caller's next pass connects again and finds the primary."""
        try:
            cur = await conn.execute(sqlfiles.query("server_identity", self.schema))
            row = await cur.fetchone()
        except psycopg.Error as exc:
            raise DatabaseError(f"server_identity: {dbconnect.describe(exc)}") from exc
        assert row is not None
        found = ServerIdentity(str(row[0]), bool(row[1]), str(row[2]), bool(row[3]), row[4])
        if found.synchronous_standbys:
            DURABILITY.synchronous = True  # for every link of this process, for good
        # how far the server's clock is from ours (within the round trip)
        self.clock_offset = found.clock.timestamp() - time.time()
        if found.in_recovery:
            refusal = psycopg.errors.ReadOnlySqlTransaction(
                f"{found.server} is a standby (in recovery); connecting again to find the primary"
            )
            raise DatabaseError(f"{self.name} link: {refusal}") from refusal
        return found

    async def fetch(self, statement: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run the named statement and return its rows; a broken link is dropped.

        Every failure, including parameters that cannot be sent at all (a string
        that cannot be encoded), is a :class:`DatabaseError` whose cause
        :func:`~tenure._db.connect.is_transient` judges."""
        conn = await self.connection()
        try:
            cur = await conn.execute(sqlfiles.query(statement, self.schema), params)
            return await cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            await self._drop_if_broken(conn, exc)
            raise DatabaseError(f"{statement}: {dbconnect.describe(exc)}") from exc
        except Exception as exc:  # parameters psycopg could not adapt or encode
            raise DatabaseError(
                f"{statement}: parameters refused: {type(exc).__name__}: {exc}"
            ) from exc

    async def _drop_if_broken(self, conn: psycopg.AsyncConnection[Any], exc: psycopg.Error) -> None:
        if dbconnect.connection_lost(exc) or conn.broken or conn.closed:
            await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                log.debug("closing %s link failed", self.name, exc_info=True)


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
    ) -> list[Claimed]:
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
        return [Claimed(*row) for row in rows]

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
        # A row is a claimed task when its verdict is NULL, else an outcome's verdict.
        claimed = [Claimed(r[0], *r[2:]) for r in rows if r[1] is None]
        return ClaimResult(claimed, _verdicts(r for r in rows if r[1] is not None))

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
