"""Acceptance tier for fleet-wide limits, fairness and rebalancing: real worker
processes, judged from the attempts table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
import pytest

from tests.conftest import eventually, worker_id_of

pytestmark = pytest.mark.acceptance


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
        key=lambda ev: (ev[0], ev[1]),
    )
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def started_while_waiting(
    db: psycopg.Connection[Any], column: str, late: str, busy: str, sent_at: datetime
) -> int:
    """How many ``busy`` tasks (by ``column``) started between ``sent_at`` and the start
    of the last ``late`` task: the work the late group had to wait behind."""
    finished = f"FROM attempts a JOIN finished_tasks f ON f.id = a.task_id WHERE f.{column} = %s"
    last_late = db.execute(f"SELECT max(a.started_at) {finished}", (late,)).fetchone()[0]
    row = db.execute(
        f"SELECT count(*) {finished} AND a.started_at > %s AND a.started_at <= %s",
        (busy, sent_at, last_late),
    ).fetchone()
    return int(row[0])


def test_max_concurrency_holds_across_eight_racing_workers_without_serialising(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given 1,500 tasks limited to 3 at a time fleet-wide, and 8 worker processes
    fleet_app.three_at_a_time.send_many([{"s": 0.005}] * 1500)
    for _ in range(8):
        workers("--lease", "2s", "--concurrency", "2")
    eventually(
        lambda: db.execute("SELECT count(*) FROM finished_tasks").fetchone()[0] == 1500,
        timeout=120,
        interval=0.5,
        what="all 1,500 finished",
    )
    # Then, from the attempts table, never more than 3 valid leases at once, and 3 were
    # reached: the limit is a ceiling, not a global lock
    intervals = db.execute("SELECT started_at, ended_at FROM attempts").fetchall()
    assert len(intervals) >= 1500
    assert max_overlap(intervals) == 3
    workers_used = db.execute("SELECT count(DISTINCT worker_id) FROM attempts").fetchone()[0]
    assert workers_used >= 4


def test_a_late_small_tenant_starts_before_the_flooded_one_runs_ten_fleets_more(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given tenant A has 50,000 queued tasks and a fleet of 2 workers x 4 slots runs them
    fleet_app.tenant_work.send_many([{"s": 0.01}] * 50_000, partition_key="tenant-a")
    for _ in range(2):
        workers("--lease", "5s", "--concurrency", "4")
    eventually(
        lambda: db.execute("SELECT count(*) FROM attempts").fetchone()[0] >= 100,
        timeout=60,
        what="A is being served",
    )
    # When tenant B sends 20 tasks
    sent_at = db.execute("SELECT clock_timestamp()").fetchone()[0]
    fleet_app.tenant_work.send_many([{"s": 0.01}] * 20, partition_key="tenant-b")
    eventually(
        lambda: (
            db.execute(
                "SELECT count(*) FROM finished_tasks WHERE partition_key = 'tenant-b'"
            ).fetchone()[0]
            == 20
        ),
        timeout=60,
        what="B's 20 finished",
    )
    # Then all of B's tasks started before A ran another 10 x (fleet concurrency 8)
    a_meanwhile = started_while_waiting(db, "partition_key", "tenant-b", "tenant-a", sent_at)
    assert a_meanwhile <= 80, a_meanwhile


def test_a_flooded_queue_does_not_starve_another_queue(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    fleet_app.flood_work.send_many([{"s": 0.01}] * 50_000)
    workers("--lease", "5s", "--concurrency", "4", "--queues", "flood,side")
    eventually(
        lambda: db.execute("SELECT count(*) FROM attempts").fetchone()[0] >= 50,
        timeout=60,
        what="the flood is being served",
    )
    sent_at = db.execute("SELECT clock_timestamp()").fetchone()[0]
    fleet_app.side_work.send_many([{"s": 0.01}] * 20)
    eventually(
        lambda: (
            db.execute("SELECT count(*) FROM finished_tasks WHERE queue = 'side'").fetchone()[0]
            == 20
        ),
        timeout=60,
        what="the side queue finished",
    )
    flood_meanwhile = started_while_waiting(db, "queue", "side", "flood", sent_at)
    assert flood_meanwhile <= 40, flood_meanwhile


def test_a_new_worker_gets_prefetched_work_handed_over(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given worker 1 runs alone, holding 4 running and 12 prefetched long tasks
    handles = fleet_app.sleepy.send_many([{"s": 1.5}] * 16)
    w1 = workers("--lease", "3s", "--concurrency", "4", "--prefetch", "12")
    w1_id = worker_id_of(db, w1.pid)
    eventually(
        lambda: (
            db.execute("SELECT count(*) FROM tasks WHERE lease_owner = %s", (w1_id,)).fetchone()[0]
            == 16
        ),
        what="worker 1 holds all sixteen",
    )
    # When worker 2 starts
    w2 = workers("--lease", "3s", "--concurrency", "4", "--prefetch", "0")
    w2_id = worker_id_of(db, w2.pid)
    # Then worker 2 runs tasks that worker 1 handed back (released, not finished: each
    # runs 1.5 s, and worker 1 alone would have run all sixteen)
    first = eventually(
        lambda: db.execute(
            "SELECT id FROM tasks WHERE lease_owner = %s AND started_at IS NOT NULL LIMIT 1",
            (w2_id,),
        ).fetchone(),
        timeout=10,
        what="worker 2 runs something",
    )[0]
    handed = db.execute(
        "SELECT worker_id, outcome FROM attempts WHERE task_id = %s ORDER BY attempt", (first,)
    ).fetchall()
    assert handed[0] == (w1_id, "released"), handed
    held_by_w1 = db.execute(
        "SELECT count(*) FROM tasks WHERE lease_owner = %s", (w1_id,)
    ).fetchone()[0]
    assert held_by_w1 <= 12  # it kept no more than its share: 4 running + 8 waiting
    # And nothing is lost or spends an attempt in the hand-off
    eventually(lambda: all(h.state() == "succeeded" for h in handles), timeout=60)
    assert db.execute("SELECT count(*) FROM attempts WHERE outcome = 'released'").fetchone()[0] >= 4
    assert db.execute("SELECT max(errors), max(crashes) FROM finished_tasks").fetchone() == (0, 0)
    assert "tasks_rebalanced" in w1.log()
