"""An in-memory stand-in for the worker's statements (:class:`tenure._store.worker.AsyncStore`).

It keeps what the worker's control plane depends on: tasks and their leases, one row
per attempt, fencing by (task, attempt, owner), lease expiry by the database clock
(here a :class:`~tests.support.clock.FakeClock`), worker rows for the heartbeat. The
real statements' rules are copied from ``functions.sql`` and the queries; the tests
in ``tests/test_store_contract.py`` run the same scenarios on both.

Faults are injected per statement: :meth:`FakeStore.fail` (before it changes
anything, or after it committed: an answer lost), :meth:`FakeStore.refuse` (outcomes
the database would refuse, such as a NUL in a text) and :meth:`FakeStore.block` (a
statement that hangs until the test lets it go).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

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
    SchedulesDue,
    Settled,
)
from tenure.errors import DatabaseError
from tenure.options import QueueOptions, TaskOptions
from tenure.states import Verdict
from tests.support.clock import FakeClock
from tests.support.fake_rows import Attempt, Task, WorkerRow, refused


@dataclass
class _Fault:
    error: DatabaseError
    times: int
    after_commit: bool


@dataclass
class FakeStore:
    """The worker's statements on in-memory tables; one object serves every part."""

    clock: FakeClock
    schema: str = "fake"
    tasks: dict[int, Task] = field(default_factory=dict)
    attempts: dict[tuple[int, int], Attempt] = field(default_factory=dict)
    workers: dict[UUID, WorkerRow] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _faults: dict[str, list[_Fault]] = field(default_factory=dict)
    _gates: dict[str, asyncio.Event] = field(default_factory=dict)
    _refuse: Callable[[Outcome], bool] = lambda o: False
    _listeners: list[asyncio.Queue[str]] = field(default_factory=list)
    _next_id: int = 1
    server: str | None = "fake:5432"  # what a test sets to another name: a failover
    clock_offset: float | None = 0.0  # and the new server's clock against the worker's
    rate_wait: float | None = None  # what a test sets: every claim says a rate held work back

    # -- the test's side -----------------------------------------------------------

    def __call__(self, name: str) -> FakeStore:
        """The store of the worker's part ``name``: this one (a worker's ``stores``)."""
        return self

    def send(
        self, n: int = 1, *, name: str = "t", queue: str = "default", **fields: Any
    ) -> list[int]:
        """Queue ``n`` tasks; their ids."""
        ids = []
        for _ in range(n):
            task = Task(self._next_id, name, queue, **fields)
            self.tasks[task.id] = task
            ids.append(task.id)
            self._next_id += 1
        return ids

    def states(self) -> dict[int, str]:
        return {t.id: t.state for t in self.tasks.values()}

    def outcomes_of(self, task_id: int) -> list[str]:
        """The outcome recorded for each attempt of ``task_id``, in attempt order."""
        return [a.outcome for (tid, _), a in sorted(self.attempts.items()) if tid == task_id]

    def count(self, statement: str) -> int:
        return sum(1 for name, _ in self.calls if name == statement)

    def fail(
        self, statement: str, error: DatabaseError, *, times: int = 1, after_commit: bool = False
    ) -> None:
        """The next ``times`` calls of ``statement`` raise ``error``: before changing
        anything, or (``after_commit``) after the change committed, its answer lost."""
        self._faults.setdefault(statement, []).append(_Fault(error, times, after_commit))

    def recover(self, statement: str) -> None:
        """Calls of ``statement`` succeed again, whatever faults were still to come."""
        self._faults.pop(statement, None)

    def refuse(self, outcome: Callable[[Outcome], bool]) -> None:
        """Outcome writes whose batch holds an outcome ``outcome`` picks are refused for
        good, as PostgreSQL refuses a text it cannot store."""
        self._refuse = outcome

    def block(self, statement: str) -> asyncio.Event:
        """Calls of ``statement`` hang until the returned event is set."""
        gate = self._gates[statement] = asyncio.Event()
        return gate

    def notify(self, payload: str) -> None:
        for queue in self._listeners:
            queue.put_nowait(payload)

    def operator_cancel(self, task_id: int) -> None:
        """What ``cancel_task()`` does to a running task: flag it and say so."""
        self.tasks[task_id].cancel_requested = True
        self.notify(f"!cancel:{task_id}")

    def add_worker(self, worker: UUID, queues: tuple[str, ...], concurrency: int) -> None:
        self.workers[worker] = WorkerRow(worker, queues, concurrency, heartbeat_at=self.clock.now())

    # -- plumbing ------------------------------------------------------------------

    async def _io(self, statement: str, **params: Any) -> _Fault | None:
        self.calls.append((statement, params))
        gate = self._gates.get(statement)
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(0)
        faults = self._faults.get(statement)
        if not faults:
            return None
        fault = faults[0]
        fault.times -= 1
        if fault.times <= 0:
            faults.pop(0)
        if not fault.after_commit:
            raise fault.error
        return fault

    @staticmethod
    def _answer(fault: _Fault | None) -> None:
        if fault is not None:
            raise fault.error

    @property
    def tasks_table(self) -> str:
        return f'"{self.schema}"."tasks"'

    def sibling(self, name: str) -> FakeStore:
        return self

    async def close(self) -> None:
        pass

    # -- claims and outcomes -------------------------------------------------------

    def _claim(
        self,
        worker: UUID,
        queues: Sequence[str],
        names: Sequence[str],
        limit: int,
        lease: timedelta,
    ) -> list[Claimed]:
        now, got = self.clock.now(), []
        for task in sorted(self.tasks.values(), key=lambda t: t.id):
            if len(got) >= limit:
                break
            if task.state == "queued" and task.queue in queues and task.task_name in names:
                task.state, task.attempt, task.lease_owner = "running", task.attempt + 1, worker
                task.lease_expires_at = now + lease.total_seconds()
                task.started_at = now
                got.append(
                    Claimed(
                        task.id,
                        task.task_name,
                        task.queue,
                        task.payload,
                        task.attempt,
                        task.errors,
                        task.crashes,
                    )
                )
        return got

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
        fault = await self._io("claim", limit=limit)
        got = self._claim(worker, queues, names, limit, lease)
        self._answer(fault)
        return ClaimResult(got, [], self.rate_wait)

    def _complete(self, worker: UUID, outcomes: Sequence[Outcome]) -> list[Settled]:
        if any(self._refuse(o) for o in outcomes):
            raise refused("task_complete_many")
        now, verdicts = self.clock.now(), []
        first = {o.task_id: o for o in reversed(outcomes)}
        for task_id in sorted(first):
            o, task = first[task_id], self.tasks.get(task_id)
            if task is None or task.state != "running" or task.lease_owner != worker:
                continue
            if task.attempt != o.attempt:
                continue
            outcome, error = o.outcome, o.error
            if outcome == "cancelled" and not task.cancel_requested:
                outcome, error = "error", "cancelled by the worker without a cancel request"
            if o.outcome == "succeeded":
                verdict = "succeeded"
            elif task.cancel_requested:
                verdict = "cancelled"
            elif o.outcome == "released":
                verdict = "released"
            elif o.outcome == "discarded" or task.errors + 1 >= task.max_attempts:
                verdict = "failed"
            else:
                verdict = "retry"
            recorded = "error" if outcome == "discarded" else outcome
            self.attempts[(task.id, task.attempt)] = Attempt(
                task.id, task.attempt, worker, recorded, error
            )
            task.lease_owner = task.lease_expires_at = task.started_at = None
            if verdict in ("succeeded", "failed", "cancelled"):
                task.state, task.result = verdict, o.result
                task.errors += verdict == "failed"
                task.last_error = error or task.last_error
            elif verdict == "retry":
                task.errors += 1
                task.last_error = error
                task.state = "scheduled" if o.delay > 0 else "queued"
                task.run_after = now + max(o.delay, 0.0)
            else:
                task.state = "queued"
            verdicts.append(Settled(task.id, Verdict(verdict)))
        return verdicts

    async def complete(self, *, worker: UUID, outcomes: Sequence[Outcome]) -> list[Settled]:
        fault = await self._io("complete", outcomes=len(outcomes))
        verdicts = self._complete(worker, outcomes)
        self._answer(fault)
        return verdicts

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
        fault = await self._io("complete_and_claim", outcomes=len(outcomes), limit=limit)
        verdicts = self._complete(worker, outcomes)
        claimed = self._claim(worker, queues, names, limit, lease)
        self._answer(fault)
        return ClaimResult(claimed, verdicts, self.rate_wait)

    async def rate_slow_down(self, outcomes: Sequence[Outcome]) -> int:
        self._answer(await self._io("rate_slow_down"))
        return 0

    async def attempts_recorded(self, *, worker: UUID, attempts: Mapping[int, int]) -> list[int]:
        fault = await self._io("attempts_recorded", attempts=dict(attempts))
        self._answer(fault)
        return [
            tid
            for tid, attempt in attempts.items()
            if (a := self.attempts.get((tid, attempt))) is not None
            and a.worker == worker
            and a.outcome != "lease_expired"
        ]

    # -- heartbeat -----------------------------------------------------------------

    def _owned(self, worker: UUID, task_id: int, attempt: int | None = None) -> Task | None:
        task = self.tasks.get(task_id)
        if task is None or task.state != "running" or task.lease_owner != worker:
            return None
        return task if attempt is None or task.attempt == attempt else None

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
        fault = await self._io("renew", held=dict(held), state=state)
        now = self.clock.now()
        me = self.workers.get(worker)
        if me is not None:
            me.heartbeat_at, me.state, me.held, me.running = now, state, len(held), running
            me.outcomes_pending = outcomes_pending
        renewed = [t for tid, a in held.items() if (t := self._owned(worker, tid, a)) is not None]
        for task in renewed:
            task.lease_expires_at = now + lease.total_seconds()
        orphans = [
            t
            for t in self.tasks.values()
            if t.state == "running"
            and t.lease_owner == worker
            and t.id not in held
            and t.id not in surrendered
            and t.started_at is not None
            and t.started_at < now - orphan_after.total_seconds()
        ]
        for task in orphans:
            self.attempts[(task.id, task.attempt)] = Attempt(
                task.id,
                task.attempt,
                worker,
                "released",
                "claimed but never received by the worker",
            )
            task.state, task.lease_owner, task.lease_expires_at, task.started_at = (
                "queued",
                None,
                None,
                None,
            )
        idle = 0
        if me is not None:
            for w in self.workers.values():
                if (
                    w.id != worker
                    and w.state == "active"
                    and set(w.queues) & set(me.queues)
                    and w.heartbeat_at > now - lease.total_seconds()
                ):
                    idle += max(w.concurrency - w.held, 0)
        self._answer(fault)
        return Renewal(
            registered=me is not None,
            renewed=frozenset(t.id for t in renewed),
            idle_elsewhere=idle,
            orphans_released=len(orphans),
            cancel_requested=[t.id for t in renewed if t.cancel_requested],
            drain_requested=me is not None and me.drain_requested,
            surrendered_kept=frozenset(
                tid for tid in surrendered if (t := self.tasks.get(tid)) and t.lease_owner == worker
            ),
        )

    async def cancel_requested(self, *, worker: UUID, held: Mapping[int, int]) -> list[int]:
        fault = await self._io("cancel_requested", held=dict(held))
        self._answer(fault)
        return [
            tid
            for tid, a in held.items()
            if (t := self._owned(worker, tid, a)) is not None and t.cancel_requested
        ]

    # -- the worker's row and what it publishes -------------------------------------

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
        fault = await self._io("register")
        self.add_worker(worker, tuple(queues), concurrency)
        self._answer(fault)

    async def set_state(self, *, worker: UUID, state: str) -> None:
        fault = await self._io("set_state", state=state)
        if worker in self.workers:
            self.workers[worker].state = state
        self._answer(fault)

    async def publish_limits(self, tasks: Sequence[TaskOptions]) -> Published:
        self._answer(await self._io("publish_limits"))
        return Published(0, 0)

    async def publish_queues(self, queues: Sequence[QueueOptions]) -> Published:
        self._answer(await self._io("publish_queues"))
        return Published(0, 0)

    async def flag_limited_running(self) -> None:
        self._answer(await self._io("flag_limited_running"))

    async def publish_rates(
        self, tasks: Sequence[TaskOptions], queues: Sequence[QueueOptions]
    ) -> tuple[int, int]:
        self._answer(await self._io("publish_rates"))
        return 0, 0

    async def publish_schedules(
        self, schedules: Sequence[Any], *, tasks: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        self._answer(await self._io("publish_schedules"))
        return [], []

    async def schedules_due(
        self, *, queues: Sequence[str], names: Sequence[str], skip: Sequence[str], limit: int
    ) -> SchedulesDue:
        # the fake holds no schedules: their tests run on PostgreSQL
        self._answer(await self._io("schedules_due"))
        return SchedulesDue([], None)

    async def unknown_tasks(self, *, queues: Sequence[str], names: Sequence[str]) -> list[str]:
        self._answer(await self._io("unknown_tasks"))
        found = {
            t.task_name
            for t in self.tasks.values()
            if t.state == "queued" and t.queue in queues and t.task_name not in names
        }
        return sorted(found)[:20]

    # -- maintenance ---------------------------------------------------------------

    async def expire_leases(self, *, limit: int) -> list[ExpiredLease]:
        fault = await self._io("expire_leases")
        now, expired = self.clock.now(), []
        due = [
            t
            for t in self.tasks.values()
            if t.state == "running" and t.lease_expires_at is not None and t.lease_expires_at < now
        ]
        for task in sorted(due, key=lambda t: t.lease_expires_at or 0)[:limit]:
            error = f"lease expired: worker {task.lease_owner} stopped renewing"
            self.attempts[(task.id, task.attempt)] = Attempt(
                task.id, task.attempt, task.lease_owner, "lease_expired", error
            )
            task.lease_owner = task.lease_expires_at = task.started_at = None
            task.crashes += 1
            if task.crashes >= task.max_crashes or task.cancel_requested:
                task.state = "cancelled" if task.cancel_requested else "quarantined"
                expired.append(ExpiredLease(task.id, task.state))
                continue
            task.last_error = error
            task.state = "queued" if task.crashes == 1 else "scheduled"
            task.run_after = now + (0 if task.crashes == 1 else min(60, 2 ** (task.crashes - 2)))
            expired.append(ExpiredLease(task.id, "requeued"))
        self._answer(fault)
        return expired

    async def mark_gone(self, *, after: timedelta) -> list[UUID]:
        self._answer(await self._io("mark_gone"))
        gone = [
            w
            for w in self.workers.values()
            if w.state != "gone" and w.heartbeat_at < self.clock.now() - after.total_seconds()
        ]
        for w in gone:
            w.state = "gone"
        return [w.id for w in gone]

    async def promote_due(self, *, limit: int) -> list[Promoted]:
        self._answer(await self._io("promote_due"))
        by_queue: dict[str, int] = {}
        for task in self.tasks.values():
            if task.state == "scheduled" and task.run_after <= self.clock.now():
                task.state = "queued"
                by_queue[task.queue] = by_queue.get(task.queue, 0) + 1
        return [Promoted(q, n) for q, n in sorted(by_queue.items())]

    async def dead_rows(self) -> DeadRows:
        self._answer(await self._io("dead_rows"))
        return DeadRows(0, len(self.tasks), may_vacuum=True)

    async def vacuum(self) -> None:
        self._answer(await self._io("vacuum"))

    async def rate_states(self) -> list[Any]:
        self._answer(await self._io("rate_states"))
        return []

    async def schedule_states(self) -> list[Any]:
        self._answer(await self._io("schedule_states"))
        return []

    async def queue_depths(self) -> list[QueueDepth]:
        self._answer(await self._io("queue_depths"))
        queues = sorted({t.queue for t in self.tasks.values()})
        return [
            QueueDepth(
                q,
                sum(t.queue == q and t.state == "queued" for t in self.tasks.values()),
                sum(t.queue == q and t.state == "scheduled" for t in self.tasks.values()),
                sum(t.queue == q and t.state == "running" for t in self.tasks.values()),
                None,
            )
            for q in queues
        ]

    # -- notifications -------------------------------------------------------------

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[AsyncIterator[str]]:
        self._answer(await self._io("listen"))
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._listeners.append(queue)

        async def payloads() -> AsyncIterator[str]:
            while True:
                yield await queue.get()

        try:
            yield payloads()
        finally:
            self._listeners.remove(queue)
