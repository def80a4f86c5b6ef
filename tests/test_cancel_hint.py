"""Cancel only what was asked: a ``!cancel:<id>`` notification is a hint, the row decides.

PostgreSQL lets any role that can connect NOTIFY on any channel, so a worker stops a
task only when its row says ``cancel_requested``, and ``complete()`` records
``cancelled`` only then. Garbage on the channel is logged once and ignored, and the
listening connection stays up.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tenure import Registry
from tenure._db.sqlfiles import channel_name
from tenure._store.worker import AsyncStore
from tenure._store.worker_rows import Claimed
from tenure._worker.notifier import CancelHints
from tenure._worker.state import Held, Holdings
from tenure.context import TaskContext
from tests.conftest import direct_url, eventually, tenure_cli
from tests.support.sql_worker import FakeWorker

# A lease this long renews every 20 s: a cancel seen well within that came by NOTIFY,
# not by a heartbeat.
LONG_LEASE = ("--lease", "60s")
NOTIFY_BOUND = 12.0

CANCEL_WITHOUT_REQUEST = "cancelled by the worker without a cancel request"


@pytest.fixture
def outsider(database_url: str) -> Iterator[str]:
    """The DSN of a login role with no privilege on any tenure schema (dropped after).

    The embedded server trusts local connections, so the password only matters on a
    server that asks for one."""
    role = f"outsider_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    url = direct_url(database_url)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    try:
        yield psycopg.conninfo.make_conninfo(url, user=role, password=password)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def notify(dsn: str, schema: str, *payloads: str) -> None:
    """Send each payload on the schema's channel, one transaction each, in order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for payload in payloads:
            conn.execute(
                sql.SQL("NOTIFY {}, {}").format(
                    sql.Identifier(channel_name(schema)), sql.Literal(payload)
                )
            )


def running_on_a_worker(workers: Any, handles: list[Any], *args: str) -> Any:
    """Start a worker with a slot for each of ``handles`` and wait until all run."""
    w = workers(*args, "--concurrency", str(len(handles)), "--prefetch", "0")
    eventually(lambda: all(h.state() == "running" for h in handles), what="running")
    return w


def stopped_counts(w: Any) -> str:
    """SIGTERM the worker and return the counters of its ``worker_stopped`` line."""
    w.signal(signal.SIGTERM)
    assert w.wait(60) == 0, w.log()
    [line] = [x for x in w.log().splitlines() if "worker_stopped" in x]
    return line


def attempts_of(db: psycopg.Connection[Any], task_id: int) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT attempt, outcome, error FROM attempts WHERE task_id = %s ORDER BY attempt",
        (task_id,),
    ).fetchall()


@pytest.mark.acceptance
@pytest.mark.needs_session
def test_a_notify_from_a_role_without_rights_cancels_nothing(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any], schema: str, outsider: str
) -> None:
    # Given a worker running a victim task and a second task an operator will cancel
    victim = fleet_app.waits_async.send({"s": 6})
    asked = fleet_app.waits_async.send({"s": 60})
    w = running_on_a_worker(workers, [victim, asked], *LONG_LEASE)
    # And a role that cannot even read tenure's tables
    with (
        psycopg.connect(outsider, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(sql.SQL("SELECT 1 FROM {}.tasks").format(sql.Identifier(schema)))
    # When that role sends what cancel_task() sends, and only then an operator cancels
    # the other task (notifications arrive in commit order, so once the operator's
    # cancel has worked, the forged one has been seen)
    notify(outsider, schema, f"!cancel:{victim.id}")
    assert asked.cancel() == "cancelling"
    eventually(lambda: asked.state() == "cancelled", timeout=NOTIFY_BOUND, what="operator's cancel")
    # Then the victim runs to its end and succeeds on its first attempt
    assert victim.result(timeout=30) == "finished"
    assert attempts_of(db, victim.id) == [(1, "succeeded", None)]
    assert attempts_of(db, asked.id) == [(1, "cancelled", "cancelled")]
    # And the worker read the victim's row before deciding
    assert "'cancel_hint_unconfirmed': 1" in stopped_counts(w)


@pytest.mark.acceptance
@pytest.mark.parametrize("listen", [True, False], ids=["notify", "poll-only"])
def test_an_operator_cancel_still_stops_a_running_task(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any], schema: str, listen: bool
) -> None:
    # Given a running task, on a worker that listens (stopped through the notification
    # and the look-up) or one that polls (stopped by its heartbeat)
    running = fleet_app.waits_in_thread.send({"s": 60})
    args = LONG_LEASE if listen else ("--lease", "3s", "--poll-only")
    running_on_a_worker(workers, [running], *args)
    # When an operator cancels it with the CLI
    out = tenure_cli("tasks", "cancel", str(running.id), "--schema", schema)
    assert out.returncode == 0, out.stderr
    assert f"task {running.id} is running; its worker stops it" in out.stdout
    # Then the worker stops it and it ends cancelled
    eventually(lambda: running.state() == "cancelled", timeout=NOTIFY_BOUND, what="cancelled")
    assert attempts_of(db, running.id) == [(1, "cancelled", "cancelled")]


@pytest.mark.acceptance
@pytest.mark.needs_session
def test_garbage_on_the_channel_is_logged_once_and_the_listener_stays_up(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any], schema: str, database_url: str
) -> None:
    running = fleet_app.waits_async.send({"s": 60})
    w = running_on_a_worker(workers, [running], *LONG_LEASE)
    # When the channel carries cancels that name no task id, many times over, and
    # cancels of tasks this worker does not hold
    garbage = [
        "!cancel:abc",
        "!cancel:",
        "!cancel:-1",
        "!cancel:0",
        "!cancel: 7",
        "!cancel:1_0",
        "!cancel:\u0663",
        "!cancel:99999999999999999999999",
        f"!cancel:{running.id} OR true",
        "!cancel:abc\n2024-01-01 ERROR forged",
    ]
    notify(direct_url(database_url), schema, *garbage * 20, "!cancel:987654321", "no-such-queue")
    # Then a real cancel sent after them still arrives by notification
    assert running.cancel() == "cancelling"
    eventually(lambda: running.state() == "cancelled", timeout=NOTIFY_BOUND, what="cancelled")
    log = w.log()
    # And the bad ones were reported once, escaped, and never broke the connection
    assert log.count("notification_ignored") == 1, log
    assert "notification_ignored kind=cancel_without_task_id payload='!cancel:abc'" in log
    assert "notifier_failed" not in log
    assert "forged" not in log
    # And nothing was looked up for them: the only look-up was the real cancel's
    assert "cancel_hint_unconfirmed" not in stopped_counts(w)


@pytest.mark.parametrize("max_attempts, verdict", [(5, "retry"), (1, "failed")])
def test_complete_records_cancelled_only_when_the_row_asks_for_it(
    registry: Registry,
    db: psycopg.Connection[Any],
    schema: str,
    max_attempts: int,
    verdict: str,
) -> None:
    @registry.task(name="guarded", max_attempts=max_attempts)
    def guarded(payload: dict) -> None: ...

    handle = guarded.send({})
    a = FakeWorker(db, schema, ["guarded"])
    [(tid, attempt)] = a.claim()
    # When a worker says 'cancelled' though nobody asked
    assert a.complete(tid, attempt, "cancelled", error="cancelled") == {tid: verdict}
    # Then it counts as an error saying why, under the task's retry budget
    assert attempts_of(db, tid) == [(attempt, "error", CANCEL_WITHOUT_REQUEST)]
    if verdict == "retry":
        row = db.execute("SELECT state, errors, last_error FROM tasks WHERE id = %s", (tid,))
        assert row.fetchone() == ("queued", 1, CANCEL_WITHOUT_REQUEST)
        # And once an operator asks, the next attempt's 'cancelled' is recorded
        [(_, second)] = a.claim()
        assert registry.client.cancel(tid) == "cancelling"
        assert a.complete(tid, second, "cancelled", error="cancelled") == {tid: "cancelled"}
        assert attempts_of(db, tid)[-1] == (second, "cancelled", "cancelled")
        assert handle.state() == "cancelled"
    else:
        assert handle.state() == "failed"


def test_cancel_hints_cost_at_most_one_query_at_a_time(
    noop: Any,  # noqa: F811
    database_url: str,
    db: psycopg.Connection[Any],
    schema: str,
) -> None:
    # Given a worker holding two running attempts, one of them asked to cancel
    noop.send({})
    noop.send({})
    a = FakeWorker(db, schema, ["noop"])
    (mine, m_attempt), (other, o_attempt) = a.claim()
    db.execute("UPDATE tasks SET cancel_requested = true WHERE id = %s", (mine,))
    holdings = Holdings()
    for tid, att in ((mine, m_attempt), (other, o_attempt)):
        row = Claimed(tid, "noop", "default", "{}", att, 0, 0)
        holdings.claimed(Held(row, TaskContext(tid, att, "noop", "default"), started=True))
    cancelled: list[int] = []
    events: Counter[str] = Counter()

    async def scenario() -> tuple[int, int, int]:
        store = AsyncStore(database_url, schema, "test")
        hints = CancelHints(store, holdings, a.id, cancelled.append, events)
        try:
            # When thousands of hints name tasks this worker does not hold
            for i in range(5000):
                hints.add(10_000_000 + i)
            none = hints.lookups if hints._task is None else -1
            # And a flood names the tasks it holds, in one burst and during a look-up
            for _ in range(5000):
                hints.add(other)
                hints.add(mine)
            while hints.lookups == none:  # the first look-up is in flight
                await asyncio.sleep(0)
            for _ in range(5000):
                hints.add(other)
            while hints._task is not None:
                await asyncio.sleep(0.01)
            return none, hints.lookups, events["cancel_hint_unconfirmed"]
        finally:
            await hints.stop()
            await store.close()

    none, lookups, unconfirmed = asyncio.run(scenario())
    # Then the ids it does not hold cost no query, the burst cost one look-up and the
    # hints sent during it one more; only the row that asks is cancelled, once
    assert none == 0
    assert lookups == 2
    assert cancelled == [mine]
    assert unconfirmed == 2
