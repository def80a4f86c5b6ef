"""Operating on work: cancel, retry, results, pause, drain requests, pruning."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tenure import Registry, ResultTimeout, TaskCancelled, TaskFailed, TaskNotFound
from tenure.client import RetryResult
from tenure.states import RETRYABLE_STATES, TaskState
from tests.conftest import direct_url, eventually, task_in, worker_id_of

pytestmark = pytest.mark.acceptance


def test_result_returns_the_value_raises_for_failures_and_times_out(
    fleet_app: Any, workers: Any
) -> None:
    ok = fleet_app.summarise.send({"pages": 3, "title": "a"})
    bad = fleet_app.always_fails.send({"why": "for the test"})
    never = fleet_app.sleepy.send({"s": 0}, delay=3600)
    workers("--lease", "2s")
    value = ok.result(timeout=20)
    assert value == fleet_app.Summary(pages=3, title="a")
    with pytest.raises(TaskFailed) as failed:
        bad.result(timeout=20)
    assert failed.value.state == "failed" and "always fails: for the test" in str(failed.value)
    started = time.monotonic()
    with pytest.raises(ResultTimeout):
        never.result(timeout=0.5)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("name", ["waits_async", "waits_in_thread"])
def test_cancel_a_queued_and_a_running_task(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any], name: str
) -> None:
    task = getattr(fleet_app, name)
    running = task.send({"s": 30})
    w = workers("--lease", "5s", "--concurrency", "1", "--prefetch", "0")
    w_id = worker_id_of(db, w.pid)
    eventually(lambda: running.state() == "running", what="running")
    queued = task.send({"s": 30})
    # A queued task never starts
    assert queued.cancel() == "cancelled"
    assert queued.state() == "cancelled"
    with pytest.raises(TaskCancelled):
        queued.result(timeout=5)
    # A running one is stopped within a second and ends cancelled
    asked = time.monotonic()
    assert running.cancel() == "cancelling"
    eventually(lambda: running.state() == "cancelled", timeout=10, what="cancelled")
    assert time.monotonic() - asked < 1.5
    rows = db.execute(
        "SELECT worker_id, outcome FROM attempts WHERE task_id = %s", (running.id,)
    ).fetchall()
    assert rows == [(w_id, "cancelled")]
    assert db.execute(
        "SELECT count(*) FROM attempts WHERE task_id = %s", (queued.id,)
    ).fetchone() == (0,)


def test_retry_runs_a_failed_task_again_with_fresh_budgets(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    handle = fleet_app.slow_then_fail_first.send({"s": 0})
    workers("--lease", "2s")
    eventually(lambda: handle.state() == "succeeded", timeout=20)
    failing = fleet_app.always_fails.send({})
    eventually(lambda: failing.state() == "failed", timeout=30)
    client = fleet_app.reg.client
    assert client.retry(handle.id) == RetryResult(handle.id, False, TaskState.SUCCEEDED)
    assert client.retry(failing.id) == RetryResult(failing.id, True, TaskState.QUEUED)
    eventually(lambda: failing.state() == "failed", timeout=30, what="failed again")
    attempts = [a.attempt for a in client.attempts(failing.id)]
    assert attempts == [1, 2, 3, 4, 5, 6]  # the attempt number went on: still a fencing token
    with pytest.raises(TaskNotFound):
        client.retry(10**9)


@pytest.mark.parametrize("state", list(TaskState))
def test_retry_queues_exactly_the_retryable_states_and_says_what_it_did(
    registry: Registry, db: psycopg.Connection[Any], state: TaskState
) -> None:
    # Given a task in this state (no worker runs)
    registry.client.open()  # migrate
    task_id = task_in(db, state)
    # When an operator retries it
    retried = registry.client.retry(task_id)
    # Then a failed, quarantined or cancelled one is queued again, and the answer says so;
    # any other is left as it was, and the answer names the state it is in
    if state in RETRYABLE_STATES:
        assert retried == RetryResult(task_id, True, TaskState.QUEUED)
        info = registry.client.get(task_id)
        assert (info.state, info.errors, info.crashes, info.attempt) == ("queued", 0, 0, 1)
    else:
        assert retried == RetryResult(task_id, False, state)
        assert registry.client.get(task_id).state == state


def test_a_paused_queue_is_not_claimed_until_resumed(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    fleet_app.reg.client.pause_queue("work", create=True)
    handle = fleet_app.sleepy.send({"s": 0})
    workers("--lease", "2s", "--poll-interval", "200ms")
    time.sleep(1.0)
    assert handle.state() == "queued"
    fleet_app.reg.client.resume_queue("work")
    eventually(lambda: handle.state() == "succeeded", timeout=10)


def test_an_operator_can_drain_a_worker(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    handle = fleet_app.sleepy.send({"s": 0.5})
    w = workers("--lease", "1s")
    w_id = worker_id_of(db, w.pid)
    eventually(lambda: handle.state() == "running")
    assert fleet_app.reg.client.drain_worker(str(w_id))
    assert w.wait(15) == 0
    assert handle.state() == "succeeded"
    assert "worker_drain_requested" in w.log()


def test_prune_deletes_old_finished_tasks_in_batches(
    fleet_app: Any, db: psycopg.Connection[Any]
) -> None:
    fleet_app.sleepy.send({})  # migrate
    db.execute("""
        INSERT INTO finished_tasks (id, task_name, queue, payload, priority, state, attempt,
                                    errors, crashes, created_at, finished_at)
        SELECT -g, 'x', 'work', '{}', 0, 'succeeded', 1, 0, 0, now(),
               now() - CASE WHEN g <= 120 THEN interval '10 days' ELSE interval '1 hour' END
        FROM generate_series(1, 150) g""")
    db.execute("""INSERT INTO attempts (task_id, attempt, worker_id, started_at, ended_at,
                                        outcome)
                  SELECT id, 1, gen_random_uuid(), now(), now(), 'succeeded'
                  FROM finished_tasks""")
    db.execute("""INSERT INTO idempotency_keys (task_name, key, task_id)
                  SELECT task_name, 'k' || id, id FROM finished_tasks""")
    db.execute("UPDATE finished_tasks SET idempotency_key = 'k' || id")
    batches: list[int] = []
    deleted = fleet_app.reg.client.prune(
        timedelta(days=7), batch=50, on_batch=lambda n, _s: batches.append(n)
    )
    assert deleted == 120 and batches == [50, 50, 20]  # bounded: never more than a batch
    assert db.execute("SELECT count(*) FROM finished_tasks").fetchone() == (30,)
    assert db.execute("SELECT count(*) FROM attempts").fetchone() == (30,)
    assert db.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (30,)


def test_prune_skips_rows_another_session_holds_instead_of_waiting(
    fleet_app: Any, db: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    fleet_app.sleepy.send({})  # migrate
    db.execute("""
        INSERT INTO finished_tasks (id, task_name, queue, payload, priority, state, attempt,
                                    errors, crashes, created_at, finished_at)
        SELECT -g, 'x', 'work', '{}', 0, 'succeeded', 1, 0, 0, now(), now() - interval '10 days'
        FROM generate_series(1, 10) g""")
    # Given another session holding a lock on one old finished row (an operator's
    # long transaction, say)
    with psycopg.connect(direct_url(database_url)) as holder:
        holder.execute(f"SELECT 1 FROM {schema}.finished_tasks WHERE id = -1 FOR UPDATE")
        # When prune runs, Then it finishes at once without that row
        done: list[int] = []
        pruner = threading.Thread(
            target=lambda: done.append(fleet_app.reg.client.prune(timedelta(days=7)))
        )
        pruner.start()
        pruner.join(10)
        assert done == [9], "prune waited for a row lock instead of skipping the row"
        holder.rollback()
    # And the next prune takes the row once it is free
    assert fleet_app.reg.client.prune(timedelta(days=7)) == 1
