"""Regression tests for faults found in review: each names what went wrong before."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tenure import Registry
from tenure._db import sqlfiles
from tenure._db.migrate import migrate
from tenure._maintenance.reaper import BATCH, Reaper
from tenure._maintenance.vacuumer import Vacuumer, VacuumResult
from tenure._store.worker import AsyncStore
from tenure._store.worker_rows import Claimed
from tenure._worker.state import Held
from tenure.context import TaskContext
from tests.conftest import CHILD_PYTHONPATH, ROOT, direct_url, eventually
from tests.privilege import create_schema
from tests.support.parts import claim_loop, heartbeat_of
from tests.support.sql_worker import LEASE, FakeWorker, expire_now, reap


def test_one_unwritable_outcome_does_not_hold_back_the_others(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given an error text and a result that both contain NUL, among ordinary tasks
    bad = fleet_app.raises_nul.send({})
    nul_result = fleet_app.returns_nul.send({})
    fine = fleet_app.sleepy.send_many([{"s": 0}] * 3)
    workers("--lease", "2s", "--concurrency", "8")
    # Then every task is written: nothing stays running behind the bad outcome
    eventually(lambda: all(h.state() == "succeeded" for h in fine), timeout=20)
    first = eventually(
        lambda: db.execute(
            "SELECT outcome, error FROM attempts WHERE task_id = %s AND attempt = 1"
            " AND outcome IS NOT NULL",
            (bad.id,),
        ).fetchone(),
        timeout=20,
        what="the NUL error's attempt recorded",
    )
    assert first[0] == "error" and "ValueError: bad\\0byte" in first[1]
    assert "bad\\0byte" in (bad.info().last_error or "")
    eventually(lambda: nul_result.state() == "succeeded", timeout=20)
    assert nul_result.info().result == "nul\ufffdinside"


def test_a_validator_raising_an_unexpected_error_fails_the_task_instead_of_stranding_it(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    ok = fleet_app.picky.send({"value": "fine"})
    db.execute(
        "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes, vtime) "
        "VALUES ('tests.apps.fleet.picky', 'work', '{\"value\": \"boom\"}', 5, 3, 0)"
    )
    workers("--lease", "2s")
    eventually(lambda: ok.state() == "succeeded", timeout=20)
    row = eventually(
        lambda: db.execute(
            "SELECT state, errors, last_error FROM finished_tasks WHERE id <> %s", (ok.id,)
        ).fetchone(),
        timeout=20,
    )
    assert row[0] == "failed" and row[1] == 1 and "KeyError" in row[2]


def test_a_limit_the_sender_does_not_know_about_still_holds(
    database_url: str, schema: str, db: psycopg.Connection[Any], registry: Registry
) -> None:
    # Given workers publish a limit of 1, and a sender from an older deploy without it
    @registry.task(name="x")
    def x(payload: dict) -> None: ...

    x.send({})  # migrates
    w = FakeWorker(db, schema, ["x"])
    w.publish_limits("x", 1)
    x.send_many([{}, {}, {}])
    # When a worker claims
    # Then only one runs at once
    assert len(w.claim(10)) == 1


def test_a_limit_only_the_sender_declares_does_not_strand_its_tasks(
    db: psycopg.Connection[Any], schema: str, registry: Registry
) -> None:
    @registry.task(name="y", max_concurrency=2)
    def y(payload: dict) -> None: ...

    y.send_many([{}, {}, {}])
    w = FakeWorker(db, schema, ["y"])  # no limits row was ever published
    assert len(w.claim(10)) == 3


def test_publishing_a_new_limit_flags_waiting_rows(
    db: psycopg.Connection[Any], schema: str, registry: Registry
) -> None:
    @registry.task(name="z")
    def z(payload: dict) -> None: ...

    z.send_many([{}] * 4)
    w = FakeWorker(db, schema, ["z"])
    w.publish_limits("z", 2)
    assert db.execute("SELECT bool_and(limited) FROM tasks").fetchone() == (True,)
    assert len(w.claim(10)) == 2


def test_a_task_lease_shorter_than_the_workers_is_raised_to_it(
    db: psycopg.Connection[Any], schema: str, registry: Registry
) -> None:
    @registry.task(name="short", lease=timedelta(seconds=1))
    def short(payload: dict) -> None: ...

    short.send({})
    w = FakeWorker(db, schema, ["short"])
    w.claim(1, lease=timedelta(seconds=30))
    left = db.execute("SELECT extract(epoch FROM lease_expires_at - now()) FROM tasks").fetchone()
    assert float(left[0]) > 25


def test_rows_a_worker_owns_but_never_received_are_handed_back(
    db: psycopg.Connection[Any], schema: str, registry: Registry
) -> None:
    # Given a claim committed but its answer never reached the worker
    @registry.task(name="o")
    def o(payload: dict) -> None: ...

    o.send({})
    w = FakeWorker(db, schema, ["o"])
    [(tid, attempt)] = w.claim()
    db.execute("UPDATE tasks SET started_at = now() - interval '1 hour'")
    # When the worker heartbeats holding nothing
    assert w.renew([]) == set()
    # Then the row is claimable again, with no error or crash counted
    assert db.execute("SELECT state, errors, crashes FROM tasks").fetchone() == ("queued", 0, 0)
    assert db.execute("SELECT attempt, outcome FROM attempts").fetchall() == [(attempt, "released")]


def test_attempts_given_up_while_self_fenced_expire_as_crashes_not_releases(
    database_url: str, db: psycopg.Connection[Any], schema: str, registry: Registry
) -> None:
    # Before: a worker stalled past most of its lease (SIGSTOP, a frozen process) fenced
    # itself, and its next heartbeat handed back the rows it had been running as
    # 'released', "never received": the run was lost but no crash counted, so a task that
    # stalls its worker could run again and again past max_crashes.
    @registry.task(name="stall")
    def stall(payload: dict) -> None: ...

    stall.send_many([{}, {}])
    w = FakeWorker(db, schema, ["stall"])
    [(ran, ran_attempt), (waited, waited_attempt)] = sorted(w.claim())
    db.execute("UPDATE tasks SET started_at = now() - interval '1 hour'")  # past orphan age

    async def scenario() -> tuple[dict[int, str], set[int], set[int]]:
        store = AsyncStore(direct_url(database_url), schema, "fenced")
        claims = claim_loop(store, worker_id=w.id, lease=LEASE, names=("stall",))
        holdings = claims.holdings
        for tid, attempt in ((ran, ran_attempt), (waited, waited_attempt)):
            holdings.claimed(
                Held(
                    Claimed(tid, "stall", "default", "{}", attempt, 0, 0),
                    TaskContext(tid, attempt, "stall", "default"),
                )
            )
        started = holdings.get(ran)
        assert started is not None
        holdings.started(started)  # the other one is still prefetched
        beat = heartbeat_of(claims, store)
        try:
            # Given the worker heard nothing for a whole lease and fenced itself
            beat.last_ok -= LEASE.total_seconds()
            assert beat.check_self_fence() and not len(holdings)
            # When the link is back and it heartbeats holding nothing
            await beat.run_once()
            kept = set(holdings.surrendered())
            states = dict(db.execute("SELECT id, state FROM tasks").fetchall())
            # and the started one's lease runs out and the reaper takes it
            expire_now(db, ran)
            reap(w)
            await beat.run_once()
            return states, kept, set(holdings.surrendered())
        finally:
            await store.close()

    # Then the prefetched attempt, which never ran, was handed back at once at no cost;
    # the started one waited for the reaper, which recorded a lost lease and a crash
    assert asyncio.run(scenario()) == ({ran: "running", waited: "queued"}, {ran}, set())
    assert db.execute("SELECT task_id, attempt, outcome FROM attempts ORDER BY 1").fetchall() == [
        (ran, ran_attempt, "lease_expired"),
        (waited, waited_attempt, "released"),
    ]
    assert dict(db.execute("SELECT id, crashes FROM tasks").fetchall()) == {ran: 1, waited: 0}


def test_a_fresh_claim_is_not_mistaken_for_an_orphan(
    db: psycopg.Connection[Any], schema: str, registry: Registry
) -> None:
    @registry.task(name="f")
    def f(payload: dict) -> None: ...

    f.send({})
    w = FakeWorker(db, schema, ["f"])
    w.claim()
    w.renew([])  # the claim's answer is still on its way: the row is seconds old
    assert db.execute("SELECT state FROM tasks").fetchone() == ("running",)


def test_the_reaper_clears_a_mass_expiry_in_one_pass(
    database_url: str, db: psycopg.Connection[Any], schema: str, registry: Registry
) -> None:
    @registry.task(name="m")
    def m(payload: dict) -> None: ...

    m.send_many([{}] * (BATCH * 2 + 10))
    w = FakeWorker(db, schema, ["m"])
    w.claim(BATCH * 3)
    db.execute("UPDATE tasks SET lease_expires_at = now() - interval '1 second'")

    async def reap() -> Any:
        store = AsyncStore(database_url, schema, "test")
        try:
            return await Reaper(store, timedelta(seconds=1), timedelta(minutes=1)).run_once()
        finally:
            await store.close()

    result = asyncio.run(reap())
    assert len(result.requeued) == BATCH * 2 + 10
    assert db.execute("SELECT count(*) FROM tasks WHERE state = 'running'").fetchone() == (0,)


def test_complete_counts_a_task_named_twice_in_one_batch_once(
    db: psycopg.Connection[Any], schema: str, registry: Registry
) -> None:
    @registry.task(name="d")
    def d(payload: dict) -> None: ...

    d.send({})
    w = FakeWorker(db, schema, ["d"])
    [(tid, attempt)] = w.claim()
    rows = w.run(
        "task_complete_many",
        worker=w.id,
        ids=[tid, tid],
        attempts=[attempt, attempt],
        outcomes=["succeeded", "released"],
        results=[None, None],
        errors=[None, None],
        delays=[0.0, 0.0],
    )
    assert len(rows) == 1
    assert db.execute("SELECT count(*) FROM attempts").fetchone() == (1,)


@pytest.mark.needs_owner  # makes a table in the schema
def test_a_schema_that_belongs_to_something_else_is_one_line(
    database_url: str, schema: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_schema(conn, schema)
        conn.execute(f"CREATE TABLE {schema}.tasks (something_else int)")
    result = subprocess.run(
        [sys.executable, "-m", "tenure", "db", "migrate", "--schema", schema],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "TENURE_DATABASE_URL": database_url},
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot migrate schema '{schema}'")
    assert result.stderr.count("\n") == 1


@pytest.mark.acceptance
def test_threads_given_up_on_do_not_starve_the_next_tasks(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given one slot, a task that times out after 0.5 s but sleeps 5 s in its thread
    slow = fleet_app.too_slow.send({})
    workers("--lease", "2s", "--concurrency", "1", "--prefetch", "0")
    eventually(lambda: db.execute("SELECT count(*) FROM attempts").fetchone()[0] >= 1)
    quick = fleet_app.sleepy.send({"s": 0})
    # Then the next task runs while the abandoned thread still sleeps
    eventually(lambda: quick.state() == "succeeded", timeout=20)
    first = db.execute(
        "SELECT started_at FROM attempts WHERE task_id = %s AND attempt = 1", (slow.id,)
    ).fetchone()[0]
    done = db.execute("SELECT ended_at FROM attempts WHERE task_id = %s", (quick.id,)).fetchone()[0]
    assert (done - first).total_seconds() < 5.0


@pytest.mark.needs_session
def test_done_notifications_are_sent_only_for_tasks_someone_waits_for(
    database_url: str, db: psycopg.Connection[Any], schema: str, registry: Registry
) -> None:
    @registry.task(name="n")
    def n(payload: dict) -> None: ...

    a, b = n.send({}), n.send({})
    w = FakeWorker(db, schema, ["n"])
    claimed = dict(w.claim(2))
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f'LISTEN "tenure_{schema}_done"')
        w.complete(a.id, claimed[a.id])  # nobody waits for a: no notification
        assert list(listener.notifies(timeout=0.5)) == []
        listener.execute(
            f'INSERT INTO "{schema}".result_waiters (task_id, listener) '
            "VALUES (%s, pg_backend_pid())",
            (b.id,),
        )
        w.complete(b.id, claimed[b.id])
        notes = list(listener.notifies(timeout=2, stop_after=1))
    assert [x.payload for x in notes] == [str(b.id)]


def test_a_renewal_answered_after_most_of_a_lease_does_not_end_self_fencing(
    database_url: str, db: psycopg.Connection[Any], schema: str
) -> None:
    # Before: a renewal stuck on a dead link was answered once the link came back, and
    # that late answer ended self-fencing; the watchdog fenced again a moment later
    # (the renewal had been sent long ago) and dropped what the worker claimed between.
    migrate(db, schema)
    app = f"tenure-late-{os.getpid()}"

    async def scenario() -> tuple[bool, bool, bool]:
        store = AsyncStore(direct_url(database_url), schema, "late")
        lease = timedelta(seconds=1)
        beat = heartbeat_of(claim_loop(store, worker_id=uuid.uuid4(), lease=lease), store)
        try:
            await beat.run_once()  # the link is open and answers
            row = db.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchone()
            assert row is not None
            # Given a renewal that hangs for over a lease, so the worker fences itself
            os.kill(row[0], signal.SIGSTOP)
            try:
                late = asyncio.create_task(beat.run_once())
                await asyncio.sleep(0)  # it is sent
                sent = time.monotonic()
                while time.monotonic() - sent < 1.0 or not beat.check_self_fence():
                    assert time.monotonic() - sent < 10
                    await asyncio.sleep(0.05)
                fenced_while_stuck = beat.fenced
            finally:
                os.kill(row[0], signal.SIGCONT)
            # When its answer arrives late, Then the worker stays fenced
            await late
            fenced_after_late_answer = beat.fenced
            # And a renewal sent now ends it
            await beat.run_once()
            return fenced_while_stuck, fenced_after_late_answer, beat.fenced
        finally:
            await store.close()

    assert asyncio.run(scenario()) == (True, True, False)


def fill_deep_backlog(conn: psycopg.Connection[Any]) -> None:
    """Queue tasks in "work" past 16 MB of hot table, one in 40 named 'ghost', the rest
    'known', and ANALYZE them."""
    conn.execute("""
        INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes)
        SELECT CASE WHEN g % 40 = 0 THEN 'ghost' ELSE 'known' END, 'work',
               '{"padding": "................................................"}', 5, 3
        FROM generate_series(1, 120000) g""")
    conn.execute("ANALYZE tasks")
    size = conn.execute("SELECT pg_relation_size('tasks')").fetchone()
    assert size is not None and size[0] > 16 * 2**20


def run_as_tenure(database_url: str, schema: str, name: str, params: dict[str, Any]) -> Any:
    """The rows of the worker's statement ``name``, run as tenure's role runs it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(sqlfiles.query(name, schema), params).fetchall()


def test_the_unknown_task_check_reads_statistics_not_a_deep_backlog(
    fleet_app: Any, db: psycopg.Connection[Any], schema: str, database_url: str
) -> None:
    fleet_app.sleepy.send({})  # migrate
    params = {"queues": ["work"], "names": ["known", fleet_app.sleepy.name]}
    # Given a small backlog with 30 tasks no worker registered: read from the rows
    db.execute("""
        INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes)
        SELECT 'ghost', 'work', '{}', 5, 3 FROM generate_series(1, 30)""")
    assert run_as_tenure(database_url, schema, "tasks_unknown", params) == [("ghost",)]
    # Given a deep one (past 16 MB) whose statistics are fresh
    fill_deep_backlog(db)
    # When the check runs, Then it names the unknown task without scanning the table
    assert run_as_tenure(database_url, schema, "tasks_unknown", params) == [("ghost",)]
    query = sqlfiles.query("tasks_unknown", schema)
    plan = "\n".join(
        r[0] for r in db.execute(b"EXPLAIN (ANALYZE, COSTS OFF) " + query, params).fetchall()
    )
    scan = next(line for line in plan.splitlines() if "Seq Scan on tasks" in line)
    assert "never executed" in scan, plan


def test_queue_depth_for_metrics_is_estimated_over_a_deep_backlog(
    fleet_app: Any, db: psycopg.Connection[Any], schema: str, database_url: str
) -> None:
    # Given more queued tasks than the metrics count exactly (10,000), and fresh statistics
    fleet_app.sleepy.send_many([{"s": 0}] * 3)
    db.execute("""
        INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes, run_after)
        SELECT 'x', 'work', '{}', 5, 3, now() - interval '1 hour'
        FROM generate_series(1, 12000)""")
    db.execute("ANALYZE tasks")
    # When a worker's /metrics reads the queue depth
    rows = {r[0]: r for r in run_as_tenure(database_url, schema, "metrics_queues", {})}
    # Then the depth is the planner's estimate, close to the truth, and the oldest age
    # is found among the tasks counted
    assert 11_000 <= rows["work"][1] <= 13_500, rows["work"]
    assert rows["work"][4] is not None and float(rows["work"][4]) >= 3000


@pytest.mark.needs_owner  # only the owner may vacuum
def test_the_vacuumer_clears_a_burn_down_of_dead_rows_and_leaves_a_clean_table_alone(
    database_url: str, db: psycopg.Connection[Any], schema: str
) -> None:
    # Given a hot table that a burn-down left with 12,000 dead rows and no live ones
    migrate(db, schema)
    db.execute(
        "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes) "
        "SELECT 'burn', 'default', '{}', 1, 1 FROM generate_series(1, 12000)"
    )
    db.execute("DELETE FROM tasks")
    db.execute("SELECT pg_stat_force_next_flush()")

    def dead() -> int:
        row = db.execute(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'tasks'::regclass"
        ).fetchone()
        return int(row[0]) if row else 0

    eventually(lambda: dead() >= 12_000, timeout=10, what="statistics see the dead rows")

    async def passes() -> tuple[VacuumResult, VacuumResult]:
        store = AsyncStore(direct_url(database_url), schema, "vacuum-test")
        try:
            vacuumer = Vacuumer(store)
            first = await vacuumer.run_once()
            db.execute("SELECT pg_stat_clear_snapshot()")
            eventually(lambda: dead() < 12_000, timeout=10, what="the vacuum counted")
            return first, await vacuumer.run_once()
        finally:
            await store.close()

    # When the vacuumer makes two passes
    first, second = asyncio.run(passes())
    # Then the first vacuums the table and the second finds nothing left to do
    assert first.vacuumed and first.dead >= 12_000
    assert not second.vacuumed and second.dead < 10_000
    assert dead() == 0
