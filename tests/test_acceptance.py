"""Acceptance tier: real worker processes, killed, paused and drained with real signals.

Every check reads the tasks, finished_tasks and attempts tables: what the database
recorded is what happened.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime
from typing import Any

import psycopg
import pytest

from tests.conftest import eventually, worker_id_of

pytestmark = pytest.mark.acceptance

LEASE = 2.0
HEARTBEAT = LEASE / 3


def db_now(db: psycopg.Connection[Any]) -> datetime:
    row = db.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def running_held_by(db: psycopg.Connection[Any], worker_id: Any) -> list[int]:
    return [
        r[0]
        for r in db.execute(
            "SELECT id FROM tasks WHERE state = 'running' AND lease_owner = %s", (worker_id,)
        )
    ]


def finished_states(db: psycopg.Connection[Any]) -> dict[int, str]:
    return dict(db.execute("SELECT id, state FROM finished_tasks").fetchall())


def all_finished(db: psycopg.Connection[Any], n: int) -> bool:
    return db.execute("SELECT count(*) FROM finished_tasks").fetchone()[0] >= n


def test_sigkilled_workers_tasks_are_taken_over_within_lease_plus_heartbeat(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given worker A holds leases on three running tasks and worker B is idle
    handles = fleet_app.sleepy.send_many([{"s": 3}] * 3)
    a = workers("--lease", f"{LEASE}s", "--concurrency", "3")
    a_id = worker_id_of(db, a.pid)
    eventually(lambda: len(running_held_by(db, a_id)) == 3, what="A runs three tasks")
    b = workers("--lease", f"{LEASE}s", "--concurrency", "3")
    b_id = worker_id_of(db, b.pid)
    # When A is killed with SIGKILL
    a.kill()
    killed_at = db_now(db)
    # Then B finishes every task, and each takeover starts within lease + one heartbeat
    eventually(lambda: all_finished(db, 3), timeout=30, what="all tasks finished")
    assert set(finished_states(db).values()) == {"succeeded"}
    rows = db.execute(
        "SELECT task_id, worker_id, outcome, started_at FROM attempts ORDER BY task_id, attempt"
    ).fetchall()
    by_task: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_task.setdefault(row[0], []).append(row)
    assert sorted(by_task) == sorted(h.id for h in handles)
    delays = []
    for attempts in by_task.values():
        assert [(r[1], r[2]) for r in attempts] == [(a_id, "lease_expired"), (b_id, "succeeded")]
        delays.append((attempts[1][3] - killed_at).total_seconds())
    assert max(delays) <= LEASE + HEARTBEAT, delays
    assert "lease_expired" in b.log()


def test_a_paused_worker_cannot_overwrite_the_new_owners_outcome(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given worker A runs a task whose first attempt fails late
    handle = fleet_app.slow_then_fail_first.send({"s": 3})
    a = workers("--lease", "1s")
    a_id = worker_id_of(db, a.pid)
    eventually(lambda: running_held_by(db, a_id) == [handle.id], what="A runs the task")
    # When A is paused past its lease and B takes the task over and succeeds
    a.signal(signal.SIGSTOP)
    b = workers("--lease", "1s")
    b_id = worker_id_of(db, b.pid)
    eventually(lambda: handle.state() == "succeeded", timeout=15, what="B's attempt succeeded")
    # And A resumes, its first attempt fails and it tries to write that and to renew
    a.signal(signal.SIGCONT)
    eventually(lambda: "write fenced out" in a.log(), timeout=15, what="A's write fenced")
    # Then B's outcome stands and A's stale writes were reported as lease lost
    info = handle.info()
    assert (info.state, info.errors, info.result) == ("succeeded", 0, "attempt 2")
    attempts = db.execute("SELECT attempt, worker_id, outcome FROM attempts ORDER BY attempt")
    assert attempts.fetchall() == [(1, a_id, "lease_expired"), (2, b_id, "succeeded")]
    assert f"lease_lost task={handle.id} attempt=1" in a.log()
    assert a.alive()


def test_no_two_valid_leases_overlap_and_limits_hold_across_kills(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given three workers over a mix of limited and unlimited tasks
    fleet_app.one_at_a_time.send_many([{"s": 0.05}] * 40)
    fleet_app.sleepy.send_many([{"s": 0.1}] * 120)
    args = ("--lease", "1s", "--concurrency", "4")
    fleet = [workers(*args) for _ in range(3)]
    # When one worker is SIGKILLed while it holds leases, and a replacement starts, twice
    for round_ in range(2):
        victim = fleet[round_]
        victim_id = worker_id_of(db, victim.pid)
        eventually(
            lambda v=victim_id: running_held_by(db, v),  # type: ignore[misc]
            what="victim holds leases",
        )
        victim.kill()
        fleet.append(workers(*args))
    eventually(lambda: all_finished(db, 160), timeout=60, what="all tasks finished")
    # Then every task succeeded, some after a takeover
    assert set(finished_states(db).values()) == {"succeeded"}
    assert (
        db.execute("SELECT count(*) FROM attempts WHERE outcome = 'lease_expired'").fetchone()[0]
        >= 1
    )
    # And no two attempts of one task overlap in time
    overlaps = db.execute("""
        SELECT a.task_id, a.attempt, b.attempt FROM attempts a JOIN attempts b
          ON a.task_id = b.task_id AND a.attempt < b.attempt
         AND b.started_at < a.ended_at""").fetchall()
    assert overlaps == []
    # And the max_concurrency=1 task never had two valid leases at once, fleet-wide
    limited = db.execute("""
        SELECT a.started_at, a.ended_at FROM attempts a
        JOIN finished_tasks f ON f.id = a.task_id
        WHERE f.task_name = 'tests.apps.fleet.one_at_a_time' ORDER BY a.started_at""").fetchall()
    assert len(limited) >= 40
    for (_, prev_end), (next_start, _) in zip(limited, limited[1:], strict=False):
        assert next_start >= prev_end
    # And the unlimited work did run in parallel (the limit is not a global lock)
    parallel = db.execute("""
        SELECT count(*) FROM attempts a JOIN attempts b
          ON a.task_id <> b.task_id AND b.started_at > a.started_at AND b.started_at < a.ended_at
        """).fetchone()[0]
    assert parallel > 0


def test_sigterm_drains_finishing_or_releasing_without_spending_attempts(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given worker A runs two short and two long tasks, and worker B is idle
    short = fleet_app.sleepy.send_many([{"s": 0.5}] * 2)
    # (long enough to outlast B's start-up on a loaded machine, so A still runs them)
    long = fleet_app.sleepy.send_many([{"s": 6}] * 2)
    a = workers("--lease", "2s", "--concurrency", "4", "--drain-timeout", "1.5s")
    a_id = worker_id_of(db, a.pid)
    eventually(lambda: len(running_held_by(db, a_id)) == 4, what="A runs all four")
    b = workers("--lease", "2s", "--concurrency", "4")
    b_id = worker_id_of(db, b.pid)
    # When A gets SIGTERM
    a.signal(signal.SIGTERM)
    # Then A exits 0 once the short tasks finished and the long ones were handed back
    assert a.wait(15) == 0
    assert db.execute("SELECT state FROM workers WHERE id = %s", (a_id,)).fetchone() == ("gone",)
    eventually(lambda: all_finished(db, 4), timeout=20, what="all four finished")
    for h in short:
        rows = db.execute(
            "SELECT worker_id, outcome FROM attempts WHERE task_id = %s", (h.id,)
        ).fetchall()
        assert rows == [(a_id, "succeeded")]
    for h in long:
        rows = db.execute(
            "SELECT worker_id, outcome, started_at, ended_at FROM attempts WHERE task_id = %s "
            "ORDER BY attempt",
            (h.id,),
        ).fetchall()
        assert [(r[0], r[1]) for r in rows] == [(a_id, "released"), (b_id, "succeeded")]
        # B picked the released task up at once, not after a lease or a poll
        assert (rows[1][2] - rows[0][3]).total_seconds() < 0.5
        info = h.info()
        assert (info.state, info.errors, info.crashes) == ("succeeded", 0, 0)
    assert "worker_drained" in a.log() and "released=2" in a.log()


def test_errors_retry_with_backoff_then_fail_and_poison_tasks_are_quarantined(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given a task that always raises, a task that kills its worker, and ordinary work
    failing = fleet_app.always_fails.send({"why": "bad input"})
    poison = fleet_app.kills_its_worker.send({})
    fleet_app.sleepy.send_many([{"s": 0.05}] * 30)
    # When workers run them, and every worker that dies is replaced (as a supervisor would)
    fleet = [workers("--lease", "1s", "--concurrency", "2") for _ in range(2)]
    deadline = time.monotonic() + 60
    while not all_finished(db, 32) and time.monotonic() < deadline:
        for i, w in enumerate(fleet):
            if not w.alive():
                fleet[i] = workers("--lease", "1s", "--concurrency", "2")
        time.sleep(0.2)
    # Then the failing task ended failed after max_attempts, with backoff between attempts
    info = failing.info()
    assert (info.state, info.errors) == ("failed", 3)
    assert "always fails: bad input" in (info.last_error or "")
    rows = db.execute(
        "SELECT outcome, started_at, ended_at FROM attempts WHERE task_id = %s ORDER BY attempt",
        (failing.id,),
    ).fetchall()
    assert [r[0] for r in rows].count("error") == 3
    errors_seen = 0
    for prev, nxt in zip(rows, rows[1:], strict=False):
        if prev[0] == "error":  # (a takeover after the poison task killed a worker is no error)
            errors_seen += 1
            backoff = 0.3 * 2 ** (errors_seen - 1)
            assert (nxt[1] - prev[2]).total_seconds() >= backoff - 0.01, rows
    # And the poison task was quarantined at its crash cap instead of crash-looping
    poisoned = poison.info()
    assert (poisoned.state, poisoned.crashes) == ("quarantined", 2)
    # And the fleet kept serving everything else
    states = finished_states(db)
    assert sum(1 for s in states.values() if s == "succeeded") == 30


def test_many_workers_started_at_once_on_an_empty_database_all_come_up(
    workers: Any, db: psycopg.Connection[Any], schema: str
) -> None:
    fleet = [workers("--lease", "2s", "--concurrency", "1") for _ in range(8)]

    def active() -> int:
        try:
            return int(
                db.execute("SELECT count(*) FROM workers WHERE state = 'active'").fetchone()[0]
            )
        except psycopg.errors.UndefinedTable:  # no worker has migrated yet
            return 0

    eventually(lambda: active() == 8, timeout=60, what="eight active workers")
    assert db.execute("SELECT count(*) FROM migrations").fetchone()[0] >= 1
    for w in fleet:
        w.signal(signal.SIGTERM)
    for w in fleet:
        assert w.wait(20) == 0
        assert "worker_start_failed" not in w.log()
