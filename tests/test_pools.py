"""Self-healing pools: the supervisor, process isolation, hard timeouts, memory guard."""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

import psycopg
import pytest

from tenure._worker.supervisor import child_argv, restart_delay
from tests.conftest import eventually

pytestmark = pytest.mark.acceptance


def live_worker_pids(db: psycopg.Connection[Any]) -> set[int]:
    try:
        rows = db.execute("SELECT pid FROM workers WHERE state = 'active'").fetchall()
    except psycopg.errors.UndefinedTable:
        return set()
    return {int(r[0]) for r in rows}


def test_restart_backoff_is_immediate_first_then_exponential() -> None:
    assert [restart_delay(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert restart_delay(50) == 30.0


def test_children_run_the_same_command_without_processes() -> None:
    argv, env = child_argv(["worker", "a:b", "--processes", "3", "--lease", "2s", "--processes=4"])
    assert argv[-4:] == ["worker", "a:b", "--lease", "2s"]
    assert env == {}


def test_a_dsn_reaches_the_children_by_environment_not_command_line() -> None:
    # A password in argv is visible to every user in ps
    secret = "postgresql://app:SECRETPW@127.0.0.1/db"
    for given in (["--dsn", secret], [f"--dsn={secret}"]):
        argv, env = child_argv(["worker", "a:b", *given, "--processes", "2"])
        assert not any("SECRETPW" in a for a in argv)
        assert env == {"TENURE_DATABASE_URL": secret}


def test_a_killed_child_is_restarted_and_its_task_taken_over(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given a supervisor with three children running long tasks
    handles = fleet_app.sleepy.send_many([{"s": 2}] * 6)
    sup = workers("--lease", "2s", "--concurrency", "2", "--prefetch", "0", "--processes", "3")
    eventually(lambda: len(live_worker_pids(db)) == 3, timeout=30, what="three children")
    victim = db.execute(
        "SELECT w.pid FROM workers w JOIN tasks t ON t.lease_owner = w.id "
        "WHERE w.state = 'active' AND t.state = 'running' LIMIT 1"
    ).fetchone()[0]
    before = live_worker_pids(db)
    # When one child is SIGKILLed mid-task
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    # Then the supervisor starts a replacement within a second or two
    eventually(lambda: len(live_worker_pids(db) - before) >= 1, timeout=10, what="restarted")
    assert time.monotonic() - killed < 3.0
    # And every task finishes, the killed child's ones after a takeover
    eventually(lambda: all(h.state() == "succeeded" for h in handles), timeout=40)
    assert (
        db.execute("SELECT count(*) FROM attempts WHERE outcome = 'lease_expired'").fetchone()[0]
        >= 1
    )
    assert "child_restarted" in sup.log()
    # And SIGTERM drains every child and the supervisor exits 0
    children = live_worker_pids(db) - {victim}
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    for pid in children:
        assert db.execute("SELECT state FROM workers WHERE pid = %s", (pid,)).fetchone() == (
            "gone",
        )
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_task_that_exits_its_worker_is_quarantined_and_the_pool_does_not_spin(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    poison = fleet_app.kills_its_worker.send({})
    good = fleet_app.sleepy.send_many([{"s": 0.05}] * 20)
    sup = workers("--lease", "1s", "--concurrency", "2", "--processes", "2")
    eventually(lambda: poison.state() == "quarantined", timeout=60, what="quarantined")
    eventually(lambda: all(h.state() == "succeeded" for h in good), timeout=60)
    restarts = len(re.findall("child_restarted", sup.log()))
    assert 1 <= restarts <= 4, sup.log()  # one per crash, not a hot loop
    assert poison.info().crashes == 2


def test_a_process_task_stuck_in_c_is_killed_at_its_timeout_and_retried(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    handle = fleet_app.stuck_in_c_first.send({})
    workers("--lease", "5s")
    eventually(lambda: handle.state() == "succeeded", timeout=40, what="the retry succeeded")
    rows = db.execute(
        "SELECT attempt, outcome, extract(epoch FROM ended_at - started_at) FROM attempts "
        "WHERE task_id = %s ORDER BY attempt",
        (handle.id,),
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(1, "timed_out"), (2, "succeeded")]
    assert float(rows[0][2]) < 3.0  # killed at the 1 s timeout, not left to spin


def test_process_tasks_run_in_reused_child_processes(fleet_app: Any, workers: Any) -> None:
    first = fleet_app.process_pid.send({})
    w = workers("--lease", "5s", "--concurrency", "1")
    pid1 = first.result(timeout=30)
    pid2 = fleet_app.process_pid.send({}).result(timeout=30)
    assert pid1 == pid2 != w.pid


def test_a_running_process_task_is_cancelled_by_killing_its_process(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    handle = fleet_app.process_sleeps.send({"s": 30})
    workers("--lease", "5s")
    eventually(lambda: handle.state() == "running", timeout=20)
    time.sleep(0.5)  # let the child start the function
    asked = time.monotonic()
    assert handle.cancel() == "cancelling"
    eventually(lambda: handle.state() == "cancelled", timeout=10)
    assert time.monotonic() - asked < 1.5


def test_a_task_process_that_grew_past_the_memory_limit_is_replaced(
    fleet_app: Any, workers: Any
) -> None:
    h1 = fleet_app.leaks.send({"mb": 80})
    w = workers("--lease", "5s", "--concurrency", "1", "--max-memory-per-child", "64MB")
    pid1 = h1.result(timeout=30)
    pid2 = fleet_app.leaks.send({"mb": 1}).result(timeout=30)
    assert pid1 != pid2
    assert "task_process_recycled" in w.log()


def test_a_group_wide_sigterm_drains_supervised_children_instead_of_stopping_them(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given a supervisor whose two children run tasks that outlast a signal's arrival
    handles = fleet_app.sleepy.send_many([{"s": 2}] * 2)
    sup = workers(
        "--lease", "5s", "--concurrency", "1", "--prefetch", "0", "--processes", "2",
        "--drain-timeout", "20s",
    )  # fmt: skip
    eventually(lambda: all(h.state() == "running" for h in handles), timeout=30)
    children = live_worker_pids(db)
    assert len(children) == 2
    # When SIGTERM reaches the supervisor and each child at once (systemd's default
    # KillMode signals every process of the unit; the supervisor forwards it again)
    sup.signal(signal.SIGTERM)
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    # Then every child drains: its task finishes on its first attempt and it exits 0
    assert sup.wait(30) == 0
    for h in handles:
        info = h.info()
        assert (info.state, info.attempt) == ("succeeded", 1), sup.log()
    assert "worker_stopped_now" not in sup.log()
    assert sup.log().count("worker_drained") == 2
