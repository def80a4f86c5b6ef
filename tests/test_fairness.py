"""Fairness and limits in the claim path: partition keys, queues, weights, buckets.

Integration tier: the real claim statement against PostgreSQL, several claimers
racing from threads where exactness is the point.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tenure import Registry
from tests.support.sql_worker import FakeWorker


def publish_queue(w: FakeWorker, name: str, **settings: Any) -> None:
    w.run(
        "queues_sync",
        names=[name],
        weights=[settings.get("weight", 1)],
        limits=[settings.get("max_concurrency")],
        per_key=[settings.get("max_concurrency_per_key")],
        key_weights=[Jsonb(settings.get("key_weights", {}))],
    )
    w.run("limits_flag_running")


def keys_of(db: psycopg.Connection[Any], ids: list[int]) -> list[str]:
    rows = dict(db.execute("SELECT id, partition_key FROM tasks WHERE id = ANY(%s)", (ids,)))
    return [rows[i] for i in ids]


def test_a_small_tenant_is_served_within_a_few_claims_of_a_flooded_one(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="ingest")
    def ingest(payload: dict) -> None: ...

    # Given tenant A queued 5,000 tasks, and 100 of them already ran
    ingest.send_many([{}] * 5000, partition_key="tenant-a")
    w = FakeWorker(db, schema, ["ingest"])
    for _ in range(10):
        for tid, attempt in w.claim(10):
            w.complete(tid, attempt)
    # When tenant B sends 10 tasks later
    ingest.send_many([{}] * 10, partition_key="tenant-b")
    # Then the next 20 claims alternate between the tenants: B is not behind A's backlog
    claimed = [t for t, _ in w.claim(20)]
    assert Counter(keys_of(db, claimed)) == {"tenant-a": 10, "tenant-b": 10}


def test_single_sends_of_a_tenant_interleave_with_a_bulk_tenant(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="ingest")
    def ingest(payload: dict) -> None: ...

    ingest.send_many([{}] * 300, partition_key="bulk")
    for _ in range(5):
        ingest.send({}, partition_key="trickle")
    w = FakeWorker(db, schema, ["ingest"])
    first = keys_of(db, [t for t, _ in w.claim(10)])
    assert first.count("trickle") == 5


def test_priority_still_wins_over_fairness(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="ingest")
    def ingest(payload: dict) -> None: ...

    ingest.send_many([{}] * 50, partition_key="a")
    urgent = ingest.send_many([{}] * 5, partition_key="a", priority=10)
    ingest.send_many([{}] * 50, partition_key="b")
    w = FakeWorker(db, schema, ["ingest"])
    assert [t for t, _ in w.claim(5)] == [h.id for h in urgent]


def test_key_weights_give_a_key_a_larger_share(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="ingest")
    def ingest(payload: dict) -> None: ...

    ingest.send({}, partition_key="x")  # migrate before publishing queue settings
    w = FakeWorker(db, schema, ["ingest"])
    w.claim(1)
    publish_queue(w, "default", key_weights={"gold": 3})
    ingest.send_many([{}] * 100, partition_key="gold")
    ingest.send_many([{}] * 100, partition_key="basic")
    shares = Counter(keys_of(db, [t for t, _ in w.claim(40)]))
    assert shares == {"gold": 30, "basic": 10}


def test_a_flooded_queue_does_not_starve_another_and_weights_split_claims(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="hot", queue="hot")
    def hot(payload: dict) -> None: ...

    @registry.task(name="cold", queue="cold")
    def cold(payload: dict) -> None: ...

    hot.send_many([{}] * 1000)
    cold.send_many([{}] * 10)
    w = FakeWorker(db, schema, ["hot", "cold"], queues=("hot", "cold"))
    queues = Counter(
        r[0]
        for r in db.execute(
            "SELECT queue FROM tasks WHERE id = ANY(%s)", ([t for t, _ in w.claim(8)],)
        )
    )
    assert queues == {"hot": 4, "cold": 4}
    publish_queue(w, "hot", weight=3)
    queues = Counter(
        r[0]
        for r in db.execute(
            "SELECT queue FROM tasks WHERE id = ANY(%s)", ([t for t, _ in w.claim(8)],)
        )
    )
    assert queues == {"hot": 6, "cold": 2}


def test_delayed_tasks_enter_their_queue_fairly_when_due(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="ingest")
    def ingest(payload: dict) -> None: ...

    ingest.send_many([{}] * 200, partition_key="a")
    later = ingest.send_many([{}] * 3, partition_key="b", delay=3600)
    w = FakeWorker(db, schema, ["ingest"])
    assert {h.state() for h in later} == {"scheduled"}
    db.execute("UPDATE tasks SET run_after = now() WHERE state = 'scheduled'")
    assert w.promote() == {"default": 3}
    claimed = [t for t, _ in w.claim(6)]
    assert {h.id for h in later} <= set(claimed)


def race(
    database_url: str,
    schema: str,
    names: list[str],
    claimers: int = 8,
    rounds: int = 5,
    n: int = 3,
    queues: tuple[str, ...] = ("default",),
) -> list[int]:
    barrier = threading.Barrier(claimers)
    got: list[int] = []

    def claimer() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            w = FakeWorker(conn, schema, names, queues=queues)
            barrier.wait()
            for _ in range(rounds):
                got.extend(t for t, _ in w.claim(n))

    threads = [threading.Thread(target=claimer) for _ in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_queue_limit_is_exact_under_racing_claimers(
    registry: Registry, database_url: str, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="q")
    def q(payload: dict) -> None: ...

    q.send_many([{}] * 100)
    publish_queue(FakeWorker(db, schema, ["q"]), "default", max_concurrency=5)
    got = race(database_url, schema, ["q"])
    assert len(got) == 5
    assert db.execute("SELECT count(*) FROM tasks WHERE state = 'running'").fetchone() == (5,)


def test_per_key_limit_is_exact_and_other_keys_still_run(
    registry: Registry, database_url: str, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="k", max_concurrency_per_key=2)
    def k(payload: dict) -> None: ...

    for key in ("a", "b", "c"):
        k.send_many([{}] * 30, partition_key=key)
    FakeWorker(db, schema, ["k"]).publish_limits("k", None, per_key=2)
    race(database_url, schema, ["k"])
    running = dict(
        db.execute(
            "SELECT partition_key, count(*) FROM tasks WHERE state = 'running' GROUP BY 1"
        ).fetchall()
    )
    assert running == {"a": 2, "b": 2, "c": 2}


def test_queue_per_key_limit_holds_across_task_names(
    registry: Registry, database_url: str, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="p1")
    def p1(payload: dict) -> None: ...

    @registry.task(name="p2")
    def p2(payload: dict) -> None: ...

    p1.send_many([{}] * 20, partition_key="t1")
    p2.send_many([{}] * 20, partition_key="t1")
    p2.send_many([{}] * 20, partition_key="t2")
    publish_queue(FakeWorker(db, schema, ["p1", "p2"]), "default", max_concurrency_per_key=3)
    race(database_url, schema, ["p1", "p2"])
    running = dict(
        db.execute(
            "SELECT partition_key, count(*) FROM tasks WHERE state = 'running' GROUP BY 1"
        ).fetchall()
    )
    assert running == {"t1": 3, "t2": 3}


def test_completing_under_a_limit_frees_the_slot_for_the_next_claim(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="l", max_concurrency=1)
    def l_(payload: dict) -> None: ...

    l_.send_many([{}] * 3)
    w = FakeWorker(db, schema, ["l"])
    w.publish_limits("l", 1)
    for _ in range(3):
        [(tid, attempt)] = w.claim(3)
        assert w.claim(3) == []
        w.complete(tid, attempt)
    assert db.execute("SELECT count(*) FROM finished_tasks").fetchone() == (3,)


def test_work_already_running_when_a_task_limit_appears_counts_against_it(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    # Given three attempts of a task with no limit, claimed freely
    @registry.task(name="n")
    def n(payload: dict) -> None: ...

    n.send_many([{}] * 10)
    w = FakeWorker(db, schema, ["n"])
    assert len(w.claim(3)) == 3
    # When a limit of 4 is published for the task name
    w.publish_limits("n", 4)
    # Then the three still running take three of its four slots
    assert len(w.claim(10)) == 1
    assert db.execute("SELECT count(*) FROM tasks WHERE state = 'running'").fetchone() == (4,)


def test_work_already_running_when_a_queue_limit_appears_counts_against_it(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    @registry.task(name="m")
    def m(payload: dict) -> None: ...

    m.send_many([{}] * 10)
    w = FakeWorker(db, schema, ["m"])
    assert len(w.claim(3)) == 3
    publish_queue(w, "default", max_concurrency=4)
    assert len(w.claim(10)) == 1
    assert db.execute("SELECT count(*) FROM tasks WHERE state = 'running'").fetchone() == (4,)
    # and a row sent after the limit carries the flag the buckets count by
    late = m.send({})
    assert db.execute("SELECT limited FROM tasks WHERE id = %s", (late.id,)).fetchone() == (True,)


def test_a_row_that_missed_its_limit_flag_is_flagged_when_claimed_through_the_limit(
    registry: Registry, db: psycopg.Connection[Any], schema: str
) -> None:
    # Given a queue limited to one, and rows a sender inserted without the flag (its
    # send raced the limit's publication)
    @registry.task(name="r")
    def r(payload: dict) -> None: ...

    r.send({})  # migrates
    db.execute("DELETE FROM tasks")
    w = FakeWorker(db, schema, ["r"])
    publish_queue(w, "default", max_concurrency=1)
    db.execute(
        "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes, limited) "
        "SELECT 'r', 'default', '{}', 5, 3, false FROM generate_series(1, 3)"
    )
    # When one is claimed, it goes through the limit and is flagged
    assert len(w.claim(10)) == 1
    assert db.execute("SELECT limited FROM tasks WHERE state = 'running'").fetchone() == (True,)
    # Then it fills the queue's one slot
    assert w.claim(10) == []
