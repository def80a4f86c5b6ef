"""The fake store keeps the worker statements' rules: the same scenarios, on both stores.

Each scenario runs once on :class:`tests.support.fake_store.FakeStore` (no database)
and once on :class:`tenure._store.worker.AsyncStore` against PostgreSQL, and asserts
the same answers: what a claim hands over, which outcomes are fenced out, what a
renewal reports, what the reaper makes of an expired lease. The in-process tests of
the worker loop (``tests/test_worker_loop.py``) lean on the fake only as far as this
file holds it to the real statements.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from typing import Any, Protocol

import psycopg
import pytest

from tenure import Registry
from tenure._store.worker import AsyncStore
from tenure._store.worker_rows import Outcome
from tests.support.clock import FakeClock
from tests.support.fake_store import FakeStore

LEASE = timedelta(seconds=30)
QUEUES = ("default",)


class Backend(Protocol):
    store: Any

    def send(self, n: int) -> list[int]: ...
    def expire(self, task_id: int) -> None: ...
    def age(self, task_id: int, seconds: float) -> None: ...
    def row(self, task_id: int) -> tuple[str, int, int, int]: ...  # state, attempt, errors, crashes
    def ask_cancel(self, task_id: int) -> None: ...
    def ask_drain(self, worker: uuid.UUID) -> None: ...
    def due_now(self, task_id: int) -> None: ...


class Fake:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = FakeStore(self.clock)

    def send(self, n: int) -> list[int]:
        return self.store.send(n)

    def expire(self, task_id: int) -> None:
        self.store.tasks[task_id].lease_expires_at = self.clock.now() - 1

    def age(self, task_id: int, seconds: float) -> None:
        task = self.store.tasks[task_id]
        task.started_at = (task.started_at or self.clock.now()) - seconds

    def row(self, task_id: int) -> tuple[str, int, int, int]:
        t = self.store.tasks[task_id]
        return t.state, t.attempt, t.errors, t.crashes

    def ask_cancel(self, task_id: int) -> None:
        self.store.tasks[task_id].cancel_requested = True

    def ask_drain(self, worker: uuid.UUID) -> None:
        self.store.workers[worker].drain_requested = True

    def due_now(self, task_id: int) -> None:
        self.store.tasks[task_id].run_after = self.clock.now()


class Postgres:
    def __init__(self, url: str, schema: str, db: psycopg.Connection[Any], reg: Registry) -> None:
        self.store = AsyncStore(url, schema, "contract")
        self.db = db

        @reg.task(name="t")
        def t(payload: dict[str, Any]) -> None: ...

        self.task = t

    def send(self, n: int) -> list[int]:
        return [h.id for h in self.task.send_many([{}] * n)]

    def expire(self, task_id: int) -> None:
        self.db.execute(
            "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (task_id,),
        )

    def age(self, task_id: int, seconds: float) -> None:
        self.db.execute(
            "UPDATE tasks SET started_at = started_at - make_interval(secs => %s) WHERE id = %s",
            (seconds, task_id),
        )

    def row(self, task_id: int) -> tuple[str, int, int, int]:
        found = self.db.execute(
            "SELECT state, attempt, errors, crashes FROM tasks WHERE id = %(id)s UNION ALL "
            "SELECT state, attempt, errors, crashes FROM finished_tasks WHERE id = %(id)s",
            {"id": task_id},
        ).fetchone()
        assert found is not None
        return found[0], found[1], found[2], found[3]

    def ask_cancel(self, task_id: int) -> None:
        self.db.execute("UPDATE tasks SET cancel_requested = true WHERE id = %s", (task_id,))

    def ask_drain(self, worker: uuid.UUID) -> None:
        self.db.execute("UPDATE workers SET drain_requested = true WHERE id = %s", (worker,))

    def due_now(self, task_id: int) -> None:
        self.db.execute("UPDATE tasks SET run_after = now() WHERE id = %s", (task_id,))


@pytest.fixture(params=["fake", pytest.param("postgres", marks=pytest.mark.database)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake":
        yield Fake()
        return
    url = request.getfixturevalue("database_url")
    made = Postgres(
        url,
        request.getfixturevalue("schema"),
        request.getfixturevalue("db"),
        request.getfixturevalue("registry"),
    )
    yield made
    asyncio.run(made.store.close())


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def claim(b: Backend, worker: uuid.UUID, n: int) -> list[tuple[int, int]]:
    rows = await b.store.claim(
        worker=worker, queues=QUEUES, names=["t"], limit=n, lease=LEASE, start=0
    )
    return [(r.id, r.attempt) for r in rows.claimed]


def test_claims_hand_over_each_task_once_and_count_its_attempts(backend: Backend) -> None:
    async def scenario() -> None:
        ids = backend.send(3)
        one, two = uuid.uuid4(), uuid.uuid4()
        first = await claim(backend, one, 2)
        rest = await claim(backend, two, 5)
        assert sorted(first + rest) == [(i, 1) for i in ids]
        assert await claim(backend, one, 5) == []
        assert all(backend.row(i)[0] == "running" for i in ids)

    run(scenario)


def test_outcomes_are_fenced_on_task_attempt_and_owner(backend: Backend) -> None:
    async def scenario() -> None:
        won, retried, released, stale = backend.send(4)
        me, other = uuid.uuid4(), uuid.uuid4()
        await claim(backend, me, 4)
        # Given one lease expired and taken over by another worker
        backend.expire(stale)
        expired = await backend.store.expire_leases(limit=10)
        assert [(e.task_id, e.verdict) for e in expired] == [(stale, "requeued")]
        assert backend.row(stale) == ("queued", 1, 0, 1)
        assert await claim(backend, other, 1) == [(stale, 2)]
        # When the first worker writes all four outcomes
        verdicts = await backend.store.complete(
            worker=me,
            outcomes=[
                Outcome(won, 1, "succeeded", result='"ok"'),
                Outcome(retried, 1, "error", error="boom"),
                Outcome(released, 1, "released"),
                Outcome(stale, 1, "succeeded"),
            ],
        )
        # Then the stale one is fenced out and the others are recorded
        assert sorted((v.task_id, v.verdict) for v in verdicts) == [
            (won, "succeeded"),
            (retried, "retry"),
            (released, "released"),
        ]
        assert backend.row(won) == ("succeeded", 1, 0, 0)
        assert backend.row(retried) == ("queued", 1, 1, 0)
        assert backend.row(released) == ("queued", 1, 0, 0)
        assert backend.row(stale) == ("running", 2, 0, 1)
        # And only this worker's own writes count as recorded by it
        recorded = await backend.store.attempts_recorded(
            worker=me, attempts={won: 1, retried: 1, stale: 1}
        )
        assert sorted(recorded) == sorted([won, retried])

    run(scenario)


def test_complete_and_claim_answers_verdicts_and_claims_apart(backend: Backend) -> None:
    async def scenario() -> None:
        a, b, c = backend.send(3)
        me = uuid.uuid4()
        await claim(backend, me, 1)
        result = await backend.store.complete_and_claim(
            worker=me,
            outcomes=[Outcome(a, 1, "succeeded")],
            queues=QUEUES,
            names=["t"],
            limit=5,
            lease=LEASE,
            start=0,
        )
        assert [(v.task_id, v.verdict) for v in result.verdicts] == [(a, "succeeded")]
        assert sorted((r.id, r.attempt, r.task_name) for r in result.claimed) == [
            (b, 1, "t"),
            (c, 1, "t"),
        ]

    run(scenario)


def test_a_renewal_reports_losses_cancels_drains_orphans_and_idle_peers(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        kept, lost, cancelled, orphan = backend.send(4)
        me, peer = uuid.uuid4(), uuid.uuid4()
        for worker, concurrency in ((me, 4), (peer, 3)):
            await backend.store.register(
                worker=worker, host="h", pid=1, queues=QUEUES, concurrency=concurrency, version="v"
            )
        await claim(backend, me, 4)
        # Given one attempt taken over, one an operator cancels, one this worker never
        # received (and half a lease old), and an operator asking it to drain
        backend.expire(lost)
        await backend.store.expire_leases(limit=10)
        backend.ask_cancel(cancelled)
        backend.age(orphan, LEASE.total_seconds())
        backend.ask_drain(me)
        # When it renews what it holds
        renewal = await backend.store.renew(
            worker=me,
            state="active",
            held={kept: 1, lost: 1, cancelled: 1},
            running=3,
            lease=LEASE,
            surrendered=[],
            orphan_after=LEASE / 2,
            outcomes_pending=0,
            outcomes_stalled=None,
        )
        # Then it hears all of it
        assert renewal.registered and renewal.renewed == {kept, cancelled}
        assert renewal.cancel_requested == [cancelled] and renewal.drain_requested
        assert renewal.orphans_released == 1 and backend.row(orphan) == ("queued", 1, 0, 0)
        assert renewal.idle_elsewhere == 3
        # And what it gave up while fenced stays apart until the reaper expires it
        again = await backend.store.renew(
            worker=me,
            state="active",
            held={kept: 1},
            running=1,
            lease=LEASE,
            surrendered=[cancelled],
            orphan_after=timedelta(0),
            outcomes_pending=0,
            outcomes_stalled=None,
        )
        assert again.orphans_released == 0 and again.surrendered_kept == {cancelled}

    run(scenario)


def test_an_expired_lease_is_requeued_then_quarantined_at_its_crash_cap(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        [task] = backend.send(1)

        async def crash() -> list[str]:
            assert await claim(backend, uuid.uuid4(), 1)
            backend.expire(task)
            return [e.verdict for e in await backend.store.expire_leases(limit=10)]

        # The first crash is taken over at once, the next one backs off
        assert await crash() == ["requeued"] and backend.row(task) == ("queued", 1, 0, 1)
        assert await crash() == ["requeued"] and backend.row(task) == ("scheduled", 2, 0, 2)
        backend.due_now(task)
        assert [(p.queue, p.count) for p in await backend.store.promote_due(limit=10)] == [
            ("default", 1)
        ]
        # And the third (max_crashes is 3) quarantines the task
        assert await crash() == ["quarantined"]
        assert backend.row(task) == ("quarantined", 3, 0, 3)

    run(scenario)
