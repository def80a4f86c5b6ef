"""Acceptance tier, continued: what a task sees, timeouts, async tasks, self-fencing,
a second signal, and the operator's commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tenure._db import connect as dbconnect
from tenure._store import link as worker_link
from tenure._store.worker import AsyncStore
from tests.conftest import CHILD_PYTHONPATH, ROOT, eventually, tenure_cli, worker_id_of

pytestmark = pytest.mark.acceptance


def attempts_of(db: psycopg.Connection[Any], task_id: int) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT attempt, outcome, error FROM attempts WHERE task_id = %s ORDER BY attempt",
        (task_id,),
    ).fetchall()


def test_async_tasks_run_on_the_loop_and_return_results(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    handles = fleet_app.async_sleepy.send_many([{"s": 0.2}] * 20)
    workers("--lease", "2s", "--concurrency", "20")
    eventually(lambda: all(h.state() == "succeeded" for h in handles), timeout=20)
    assert {h.info().result for h in handles} == {"done"}
    span = db.execute("SELECT extract(epoch FROM max(ended_at) - min(started_at)) FROM attempts")
    assert float(span.fetchone()[0]) < 2.0  # 20 x 0.2 s ran concurrently, not one by one


@pytest.mark.parametrize("name", ["too_slow", "too_slow_async"])
def test_a_timeout_ends_the_attempt_as_timed_out_and_follows_the_retry_policy(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any], name: str
) -> None:
    handle = getattr(fleet_app, name).send({})
    workers("--lease", "2s")
    eventually(lambda: handle.state() == "failed", timeout=20, what="failed after retries")
    rows = attempts_of(db, handle.id)
    assert [r[1] for r in rows] == ["timed_out", "timed_out"]
    assert all("timed out after 0.5s" in r[2] for r in rows)


def test_a_task_learns_its_lease_was_lost_through_current(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # Given worker A runs attempt 1, which watches current().lease_lost
    seen = tmp_path / "seen.txt"
    handle = fleet_app.notices_lease_loss.send({"path": str(seen)})
    a = workers("--lease", "1s")
    a_id = worker_id_of(db, a.pid)
    eventually(
        lambda: db.execute("SELECT lease_owner FROM tasks").fetchone() == (a_id,),
        what="A runs the task",
    )
    # When A is paused past its lease, B takes over, and A resumes
    a.signal(signal.SIGSTOP)
    workers("--lease", "1s")
    eventually(lambda: handle.state() == "succeeded", timeout=15, what="taken over")
    a.signal(signal.SIGCONT)
    # Then the task running on A sees lease_lost (and stop) set
    eventually(seen.exists, timeout=10, what="attempt 1 noticed")
    assert seen.read_text() == "lost attempt 1; stop=True"
    assert handle.info().result == "later attempt"


def test_a_worker_cut_off_from_the_database_fences_itself(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # Given a worker running a task
    seen = tmp_path / "seen.txt"
    fleet_app.notices_lease_loss.send({"path": str(seen)})
    a = workers("--lease", "1s")
    a_id = worker_id_of(db, a.pid)
    eventually(
        lambda: db.execute("SELECT lease_owner FROM tasks").fetchone() == (a_id,),
        what="A runs the task",
    )
    backend = db.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
        (f"tenure-heartbeat-{a.pid}",),
    ).fetchone()
    assert backend is not None
    # When its heartbeat cannot reach the database for longer than the lease
    os.kill(backend[0], signal.SIGSTOP)
    try:
        # Then it cuts itself off: the task is told its lease is lost
        eventually(seen.exists, timeout=10, what="the task noticed")
        assert "worker_self_fenced" in a.log()
    finally:
        os.kill(backend[0], signal.SIGCONT)
    # And when the database answers again the worker carries on
    eventually(lambda: "worker_reconnected" in a.log(), timeout=10, what="reconnected")
    assert a.alive()


def test_a_second_signal_stops_at_once_and_the_lease_then_expires(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    handle = fleet_app.notices_lease_loss.send({"path": str(tmp_path / "x"), "wait": 30})
    a = workers("--lease", "1s", "--drain-timeout", "30s")
    a_id = worker_id_of(db, a.pid)
    eventually(
        lambda: db.execute("SELECT lease_owner FROM tasks").fetchone() == (a_id,),
        what="A runs the task",
    )
    a.signal(signal.SIGINT)
    eventually(lambda: "worker_draining" in a.log(), what="draining")
    a.signal(signal.SIGINT)
    assert a.wait(5) == 1
    workers("--lease", "1s")
    eventually(lambda: handle.state() == "succeeded", timeout=15, what="taken over")
    assert [r[1] for r in attempts_of(db, handle.id)] == ["lease_expired", "succeeded"]


def test_status_shows_queues_limits_keys_workers_and_leases(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    # Given four long tasks of tenant-x, a delayed one, and a limited task in the queue
    fleet_app.sleepy.send_many([{"s": 30}] * 4, partition_key="tenant-x")
    fleet_app.sleepy.send({"s": 0}, delay=3600)
    w = workers("--lease", "2s", "--concurrency", "2", "--prefetch", "1")
    eventually(
        lambda: (
            db.execute("SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL").fetchone()[0]
            == 3
        ),
        what="two running, one prefetched",
    )
    eventually(
        lambda: db.execute("SELECT held FROM workers WHERE pid = %s", (w.pid,)).fetchone() == (3,),
        what="the worker published what it holds",
    )
    # When an operator asks for the status
    result = tenure_cli(
        "status", "--schema", schema, "--json", env={"TENURE_DATABASE_URL": database_url}
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    # Then it shows each: queue counts, the limited task, the largest key, the worker
    (work,) = [q for q in doc["queues"] if q["queue"] == "work"]
    assert (work["queued"], work["scheduled"], work["running"]) == (1, 1, 3)
    limits = {x["task"]: x for x in doc["task_limits"]}
    assert limits[fleet_app.three_at_a_time.name] == {
        "task": fleet_app.three_at_a_time.name,
        "running": 0,
        "max_concurrency": 3,
        "max_concurrency_per_key": None,
    }
    assert doc["partition_keys"][0] == {
        "queue": "work",
        "key": "tenant-x",
        "queued": 1,
        "queued_estimated": False,
        "running": 3,
    }
    (worker,) = [x for x in doc["workers"] if x["pid"] == w.pid]
    assert worker["state"] == "active"
    assert (worker["leases"], worker["held"], worker["running"]) == (3, 3, 2)


def test_db_url_prints_the_dsn_in_use(database_url: str) -> None:
    result = tenure_cli("db", "url", env={"TENURE_DATABASE_URL": database_url})
    assert result.stdout.strip() == database_url
    from tenure.embedded import embedded_dsn

    env = {k: v for k, v in os.environ.items() if k != "TENURE_DATABASE_URL"}
    plain = subprocess.run(
        [sys.executable, "-m", "tenure", "db", "url"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    if os.environ.get("TENURE_TEST_DATABASE_URL"):
        # The suite runs on another server, so the embedded one may not be running:
        # then db url says so rather than print a DSN that fails.
        from tenure.embedded import embedded_status

        if not embedded_status()["running"]:
            assert plain.returncode == 1 and plain.stdout == ""
            assert "tenure db start" in plain.stderr
            return
    assert plain.stdout.strip() == embedded_dsn()


def test_sessions_limit_idle_transactions_and_notice_a_dead_peer_within_seconds(
    database_url: str,
) -> None:
    conn = dbconnect.connect(database_url)
    with conn:
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("30s",)
        params = conn.info.get_parameters()
        assert (params.get("keepalives"), params.get("keepalives_idle")) == ("1", "2")
        assert (params.get("keepalives_interval"), params.get("keepalives_count")) == ("1", "2")
        assert params.get("tcp_user_timeout") == str(dbconnect.DEAD_PEER_S * 1000)
        # a client session's commits are synchronous: when send returns, the task is stored
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)


def test_a_workers_link_commits_asynchronously_on_a_server_without_synchronous_standbys(
    database_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (a process that has seen synchronous standbys, as the failover tests' has, keeps
    # committing synchronously: this one has not)
    monkeypatch.setattr(worker_link.DURABILITY, "synchronous", False)

    async def probe() -> tuple[Any, str | None]:
        link = AsyncStore(database_url, schema, "probe").link
        try:
            conn = await link.connection()
            cur = await conn.execute("SHOW synchronous_commit")
            return await cur.fetchone(), link.server.server if link.server else None
        finally:
            await link.close()

    setting, server = asyncio.run(probe())
    assert setting == ("off",)
    assert server is not None and server.rpartition(":")[2].isdigit()


@pytest.mark.acceptance
def test_a_worker_runs_from_code_through_the_public_api_alone(
    fleet_app: Any, schema: str, database_url: str, tmp_path: Path
) -> None:
    # Given a program that runs a worker with nothing but `import tenure`
    program = (
        "import logging, sys, tenure\n"
        "from tests.apps import fleet\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "config = tenure.WorkerConfig(queues=['work'], concurrency=2)\n"
        "sys.exit(tenure.run_worker(fleet.reg, config, dsn=sys.argv[1]))\n"
    )
    done = fleet_app.sleepy.send({"s": 0})
    proc = subprocess.Popen(
        [sys.executable, "-c", program, database_url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "TENURE_TEST_SCHEMA": schema},
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        # Then it runs the task, and SIGTERM drains it to a clean exit
        assert done.result(timeout=60) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert "worker_drained" in (tmp_path / "worker.log").read_text()
