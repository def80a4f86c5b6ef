"""Integration tier: the queue's SQL against a real PostgreSQL, no worker process.

Each test plays one or two workers by calling the same named statements the
worker uses, so fencing, limits and reaping are checked statement by statement.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tenure import DatabaseError, PayloadInvalid, Registry
from tenure._db import arrays, sqlfiles
from tests.support.sql_worker import FakeWorker, expire_now, reap


def test_send_commits_and_returns_a_handle(noop: Any, db: psycopg.Connection[Any]) -> None:
    handle = noop.send({"a": 1})
    assert handle.state() == "queued"
    row = db.execute(
        "SELECT task_name, queue, payload FROM tasks WHERE id = %s", (handle.id,)
    ).fetchone()
    assert row == ("noop", "default", {"a": 1})


def test_send_many_is_one_statement_and_keeps_order(noop: Any, db: psycopg.Connection[Any]) -> None:
    handles = noop.send_many([{"i": i} for i in range(500)])
    ids = [h.id for h in handles]
    assert ids == sorted(ids) and len(set(ids)) == 500
    payloads = db.execute("SELECT payload FROM tasks ORDER BY id").fetchall()
    assert [p[0]["i"] for p in payloads] == list(range(500))


def test_send_many_sends_nothing_if_one_payload_is_invalid(
    registry: Registry, db: psycopg.Connection[Any]
) -> None:
    @registry.task(name="typed")
    def typed(payload: dict[str, int]) -> None: ...

    with pytest.raises(PayloadInvalid, match=r"payload \[1\] invalid: x:"):
        typed.send_many([{"x": 1}, {"x": "nope"}])
    registry.client.open()  # connect + migrate
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_idempotency_key_returns_the_existing_task(noop: Any, db: psycopg.Connection[Any]) -> None:
    first = noop.send({"a": 1}, idempotency_key="doc-42")
    again = noop.send({"a": 2}, idempotency_key="doc-42")
    other = noop.send({"a": 3}, idempotency_key="doc-43")
    assert first.id == again.id != other.id
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (2,)


def test_idempotency_key_holds_after_the_task_finished(
    noop: Any, db: psycopg.Connection[Any], schema: str
) -> None:
    first = noop.send({}, idempotency_key="k")
    w = FakeWorker(db, schema, ["noop"])
    [(tid, attempt)] = w.claim()
    assert w.complete(tid, attempt) == {tid: "succeeded"}
    assert noop.send({}, idempotency_key="k").id == first.id
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_concurrent_senders_with_one_key_create_one_task(
    noop: Any, registry: Registry, database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    ids: list[int] = []
    registry.client.open()  # migrate once before the race

    def send() -> None:
        reg = Registry(database_url, schema=schema)
        task = reg.task(name="noop")(lambda payload: None)
        ids.append(task.send({}, idempotency_key="same").id)
        reg.client.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 8
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


def test_transactional_enqueue_rolls_back_with_the_caller(
    noop: Any, database_url: str, db: psycopg.Connection[Any]
) -> None:
    noop.registry.client.open()
    with psycopg.connect(database_url) as conn:
        handle = noop.send({"a": 1}, connection=conn)
        conn.rollback()
    with psycopg.connect(database_url) as conn:
        kept = noop.send({"a": 2}, connection=conn)
        conn.commit()
    ids = {r[0] for r in db.execute("SELECT id FROM tasks").fetchall()}
    assert ids == {kept.id} and handle.id not in ids


def test_delayed_task_is_not_claimed_before_its_time(
    noop: Any, db: psycopg.Connection[Any], schema: str
) -> None:
    noop.send({}, delay=timedelta(hours=1))
    now_task = noop.send({})
    w = FakeWorker(db, schema, ["noop"])
    assert [t for t, _ in w.claim()] == [now_task.id]


def test_claim_respects_priority_then_age(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="p")
    def p(payload: dict) -> None: ...

    low = p.send({}, priority=0)
    high = p.send({}, priority=10)
    w = FakeWorker(db, schema, ["p"])
    assert [t for t, _ in w.claim(2)] == [high.id, low.id]


def test_two_claimers_never_get_the_same_task(noop: Any, database_url: str, schema: str) -> None:
    noop.send_many([{}] * 400)
    got: list[list[int]] = [[], [], [], []]

    def claimer(i: int) -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            w = FakeWorker(conn, schema, ["noop"])
            while batch := w.claim(7):
                got[i].extend(t for t, _ in batch)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [t for g in got for t in g]
    assert len(every) == 400 and len(set(every)) == 400


def test_unknown_task_names_are_not_claimed(
    noop: Any, db: psycopg.Connection[Any], schema: str
) -> None:
    noop.send({})
    db.execute(
        "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes) "
        "VALUES ('nobody.knows', 'default', '{}', 5, 3)"
    )
    w = FakeWorker(db, schema, ["noop"])
    assert len(w.claim(10)) == 1
    assert db.execute("SELECT state FROM tasks WHERE task_name = 'nobody.knows'").fetchone() == (
        "queued",
    )


# -- fencing ------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["succeeded", "error", "discarded", "released", "cancelled"])
def test_a_worker_that_lost_its_lease_cannot_write_any_outcome(
    noop: Any, db: psycopg.Connection[Any], schema: str, outcome: str
) -> None:
    # Given worker A claimed a task, its lease expired and worker B took the task over
    handle = noop.send({})
    a, b = FakeWorker(db, schema, ["noop"]), FakeWorker(db, schema, ["noop"])
    [(tid, a_attempt)] = a.claim()
    expire_now(db, tid)
    assert reap(b) == [(tid, "requeued")]
    [(_, b_attempt)] = b.claim()
    # When A writes its outcome and renews
    assert a.complete(tid, a_attempt, outcome, error="late") == {}
    assert a.renew([(tid, a_attempt)]) == set()
    # Then nothing changed: B still owns the running attempt, and B's write counts
    row = db.execute(
        "SELECT state, attempt, lease_owner, errors FROM tasks WHERE id = %s", (tid,)
    ).fetchone()
    assert row == ("running", b_attempt, b.id, 0)
    assert b.complete(tid, b_attempt) == {tid: "succeeded"}
    assert handle.state() == "succeeded"
    outcomes = db.execute(
        "SELECT attempt, worker_id, outcome FROM attempts ORDER BY attempt"
    ).fetchall()
    assert outcomes == [(a_attempt, a.id, "lease_expired"), (b_attempt, b.id, "succeeded")]


def test_the_same_worker_cannot_write_for_an_older_attempt(
    noop: Any, db: psycopg.Connection[Any], schema: str
) -> None:
    noop.send({})
    a = FakeWorker(db, schema, ["noop"])
    [(tid, first)] = a.claim()
    expire_now(db, tid)
    reap(a)
    [(_, second)] = a.claim()
    assert second == first + 1
    assert a.complete(tid, first) == {}
    assert a.complete(tid, second) == {tid: "succeeded"}


def test_renew_extends_only_leases_still_held(
    noop: Any, db: psycopg.Connection[Any], schema: str
) -> None:
    noop.send_many([{}, {}])
    a = FakeWorker(db, schema, ["noop"])
    held = a.claim()
    before = dict(db.execute("SELECT id, lease_expires_at FROM tasks").fetchall())
    expire_now(db, held[1][0])
    reap(a)
    assert a.renew(held) == {held[0][0]}
    after = dict(
        db.execute("SELECT id, lease_expires_at FROM tasks WHERE state = 'running'").fetchall()
    )
    assert after[held[0][0]] >= before[held[0][0]]
    assert held[1][0] not in after


# -- outcomes -----------------------------------------------------------------------------


def test_errors_retry_with_the_given_delay_then_fail_for_good(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="flaky", max_attempts=2)
    def flaky(payload: dict) -> None: ...

    handle = flaky.send({})
    w = FakeWorker(db, schema, ["flaky"])
    [(tid, attempt)] = w.claim()
    assert w.complete(tid, attempt, "error", error="first", delay=3600) == {tid: "retry"}
    row = db.execute(
        "SELECT state, errors, last_error, run_after > now() + interval '59 minutes' "
        "FROM tasks WHERE id = %s",
        (tid,),
    ).fetchone()
    assert row == ("scheduled", 1, "first", True)
    assert w.claim() == []  # backing off
    db.execute("UPDATE tasks SET run_after = now() WHERE id = %s", (tid,))
    assert w.promote() == {"default": 1}
    [(_, attempt)] = w.claim()
    assert w.complete(tid, attempt, "error", error="second") == {tid: "failed"}
    info = handle.info()
    assert (info.state, info.errors, info.last_error) == ("failed", 2, "second")


@pytest.mark.needs_session
def test_release_spends_no_attempt_and_wakes_the_queue(
    noop: Any, database_url: str, db: psycopg.Connection[Any], schema: str
) -> None:
    noop.send({})
    w = FakeWorker(db, schema, ["noop"])
    [(tid, attempt)] = w.claim()
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {sqlfiles.channel_name(schema)}")
        assert w.complete(tid, attempt, "released") == {tid: "released"}
        notes = list(listener.notifies(timeout=2, stop_after=1))
    assert [n.payload for n in notes] == ["default"]
    row = db.execute("SELECT state, errors, crashes, run_after <= now() FROM tasks").fetchone()
    assert row == ("queued", 0, 0, True)
    assert db.execute("SELECT outcome FROM attempts").fetchall() == [("released",)]


def test_expired_leases_are_requeued_then_quarantined_at_the_crash_cap(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="poison", max_crashes=2)
    def poison(payload: dict) -> None: ...

    handle = poison.send({})
    w = FakeWorker(db, schema, ["poison"])
    [(tid, _)] = w.claim()
    expire_now(db, tid)
    assert reap(w) == [(tid, "requeued")]
    assert db.execute("SELECT crashes, run_after <= now() FROM tasks").fetchone() == (1, True)
    w.claim()
    expire_now(db, tid)
    assert reap(w) == [(tid, "quarantined")]
    info = handle.info()
    assert info.state == "quarantined" and info.crashes == 2
    assert "lease expired 2 times" in (info.last_error or "")
    assert [r[0] for r in db.execute("SELECT outcome FROM attempts ORDER BY attempt")] == [
        "lease_expired",
        "lease_expired",
    ]


def test_repeated_crashes_back_off(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="crashy", max_crashes=10)
    def crashy(payload: dict) -> None: ...

    crashy.send({})
    w = FakeWorker(db, schema, ["crashy"])
    waits = []
    for _ in range(4):
        db.execute("UPDATE tasks SET run_after = now()")
        w.promote()
        [(tid, _)] = w.claim()
        expire_now(db, tid)
        reap(w)
        waits.append(
            db.execute("SELECT extract(epoch FROM run_after - now()) FROM tasks").fetchone()[0]
        )
    assert waits[0] <= 0.01  # the first takeover is immediate
    assert 0.7 <= waits[1] <= 1.3 and 1.4 <= waits[2] <= 2.6 and 2.9 <= waits[3] <= 5.1


# -- limits -------------------------------------------------------------------------------


def test_max_concurrency_is_fleet_wide_and_exact_under_races(
    registry: Registry, database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    @registry.task(name="lim", max_concurrency=3)
    def lim(payload: dict) -> None: ...

    lim.send_many([{}] * 50)
    FakeWorker(db, schema, ["lim"]).publish_limits("lim", 3)
    barrier = threading.Barrier(8)
    got: list[int] = []

    def claimer() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            w = FakeWorker(conn, schema, ["lim"])
            barrier.wait()
            for _ in range(5):
                got.extend(t for t, _ in w.claim(3))

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 3
    assert db.execute("SELECT count(*) FROM tasks WHERE state = 'running'").fetchone() == (3,)


def test_an_expired_lease_frees_its_limit_slot_without_a_sweep(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="one", max_concurrency=1)
    def one(payload: dict) -> None: ...

    one.send_many([{}, {}])
    a, b = FakeWorker(db, schema, ["one"]), FakeWorker(db, schema, ["one"])
    a.publish_limits("one", 1)
    [(tid, attempt)] = a.claim()
    assert b.claim() == []
    expire_now(db, tid)
    claimed = b.claim()  # no reaper ran: the claim itself expires the stale lease
    assert len(claimed) == 1
    assert a.renew([(tid, attempt)]) == set()  # the late renewal cannot revive it
    assert db.execute("SELECT count(*) FROM tasks WHERE state = 'running'").fetchone() == (1,)


def test_outcomes_written_with_a_claim_are_fenced_and_free_their_slot_for_it(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="one", max_concurrency=1)
    def one(payload: dict) -> None: ...

    t1, t2, t3 = (h.id for h in one.send_many([{}, {}, {}]))
    a, b = FakeWorker(db, schema, ["one"]), FakeWorker(db, schema, ["one"])
    a.publish_limits("one", 1)
    [(_, a1)] = a.claim()
    # The outcome is written first, so the slot it frees is free to the claim
    assert a.complete_and_claim([(t1, a1)]) == ({t1: "succeeded"}, [(t2, 1)])
    # A stale outcome is fenced out and the claim beside it still respects the limit
    expire_now(db, t2)
    assert reap(b) == [(t2, "requeued")]
    [(_, b2)] = b.claim()
    assert a.complete_and_claim([(t2, 1)]) == ({}, [])
    assert b.complete_and_claim([(t2, b2)]) == ({t2: "succeeded"}, [(t3, 1)])
    attempts = db.execute(
        "SELECT task_id, attempt, worker_id, outcome FROM attempts ORDER BY task_id, attempt"
    ).fetchall()
    assert attempts == [
        (t1, 1, a.id, "succeeded"),
        (t2, 1, a.id, "lease_expired"),
        (t2, 2, b.id, "succeeded"),
    ]


def test_lifting_a_limit_frees_rows_sent_under_it(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="was_limited", max_concurrency=1)
    def was_limited(payload: dict) -> None: ...

    was_limited.send_many([{}, {}, {}])
    w = FakeWorker(db, schema, ["was_limited"])
    w.publish_limits("was_limited", 1)
    assert len(w.claim(3)) == 1
    w.publish_limits("was_limited", None)
    assert len(w.claim(3)) == 2


# -- bad input ----------------------------------------------------------------------------


def test_unreachable_database_is_one_clear_line(schema: str) -> None:
    reg = Registry("postgresql://nobody@127.0.0.1:1/none", schema=schema)
    task = reg.task(name="x")(lambda payload: None)
    with pytest.raises(DatabaseError) as err:
        task.send({})
    message = str(err.value)
    assert message.startswith("cannot connect to PostgreSQL") and "\n" not in message
    assert "TENURE_DATABASE_URL" in message


def test_batch_array_literals_round_trip_every_value(db: psycopg.Connection[Any]) -> None:
    # Given values that need quoting in PostgreSQL's array syntax
    texts = ["plain", None, 'a "quoted" word', "back\\slash", "", "NULL", " pad ", "ünï", "a,b}{"]
    results = ["null", '{"k": "v\\"w"}', None, "[1, 2]"]
    ints = [0, -1, 2**62, 7]
    floats = [0.0, 1.5, 1e-7, 123456.789]
    # When they are sent as the worker's batch literals
    row = db.execute(
        "SELECT %s::text[], %s::jsonb[], %s::bigint[], %s::float8[], %s::integer[]",
        (
            arrays.texts(texts),
            arrays.texts(results),
            arrays.ints(ints),
            arrays.floats(floats),
            arrays.ints([]),
        ),
    ).fetchone()
    # Then PostgreSQL reads back exactly what was sent
    assert row is not None
    assert row[0] == texts
    assert row[1] == [None, {"k": 'v"w'}, None, [1, 2]]
    assert row[2] == ints
    assert row[3] == floats
    assert row[4] == []


def test_a_reaped_attempt_is_not_taken_for_an_outcome_the_worker_wrote(
    noop: Any, db: psycopg.Connection[Any], schema: str
) -> None:
    # Given a worker whose earlier attempts were one written by it, one reaped
    noop.send({})  # the schema exists
    me = uuid.uuid4()
    db.execute(
        "INSERT INTO attempts (task_id, attempt, worker_id, started_at, ended_at, outcome) "
        "VALUES (1, 1, %s, now(), now(), 'succeeded'), (2, 1, %s, now(), now(), 'lease_expired')",
        (me, me),
    )
    # When its completer asks which of them it had recorded before a reconnect
    rows = db.execute(
        sqlfiles.query("attempts_recorded", schema),
        {"worker": me, "ids": [1, 2], "attempts": [1, 1]},
    ).fetchall()
    # Then only the outcome it wrote counts; the reaped one was fenced
    assert rows == [(1,)]
