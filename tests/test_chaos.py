"""Chaos tier: short fixed-seed campaigns of each fault kind, judged by the invariant checker.

Each campaign runs real workers against a private embedded PostgreSQL (never the shared
one: it is restarted by one of these tests), injects its faults from a fixed seed and
fails if any invariant breaks: nothing lost, one valid lease at a time, only the last
attempt's outcome stands, duplicates only after a lost attempt, the limit holds, and
takeovers start within lease + heartbeat + 1 s. ``make chaos`` runs the long campaign.

The checker itself is shown to fail where it must: against a ``complete()`` whose fence
was removed, a late outcome is reported, during the run and after it.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chaos import netns
from chaos.app import EFFECTS_DDL
from chaos.checker import Fault, check
from chaos.driver import Campaign, CampaignConfig, Result, run_campaign
from chaos.fleet import faketime_library
from chaos.monitor import Monitor
from tenure import Registry
from tenure._db import sqlfiles
from tests.support.sql_worker import FakeWorker, expire_now, reap

pytestmark = pytest.mark.acceptance

ROOT_NEEDED = "needs root for network namespaces (ip netns)"


def campaign(
    *kinds: str, seed: int, faults: int = 2, tasks: int = 300, direct_workers: int = 2
) -> Result:
    # Given a fleet over a steady stream of tasks, When the faults hit, Then the checker
    # finds every invariant intact (asserted by each test with the campaign's seed).
    result = run_campaign(
        CampaignConfig(
            seed=seed,
            tasks=tasks,
            faults_per_kind=faults,
            kinds=kinds,
            rate=25.0,
            # Room for one worker to run the whole stream plus what it takes over, so a
            # takeover measures the lease protocol, not a queue for free slots.
            concurrency=32,
            direct_workers=direct_workers,
            drain_timeout=60.0,
        )
    )
    assert result.report.ok, result.explain()
    assert result.report.lost == 0 and result.report.sent == tasks, result.explain()
    assert result.report.faults == {k: faults for k in kinds}, result.explain()
    return result


def test_killed_and_paused_workers_lose_nothing_and_are_taken_over_in_time() -> None:
    result = campaign("kill", "stop", seed=101)
    rep = result.report
    # The faults hit workers with work in flight: their attempts expired and were taken over
    assert rep.lease_expired_attempts >= 1 and rep.takeover_first.count >= 1, result.explain()
    assert rep.takeover_first.max <= result.config.takeover_bound, result.explain()
    # and every extra run follows an attempt that lost its lease
    assert rep.extra_runs == rep.extra_runs_after_lost_lease, result.explain()


def test_killed_supervisor_children_are_restarted_and_taken_over_in_time() -> None:
    result = campaign("kill_child", seed=606)
    rep = result.report
    # The supervisor replaced every child it lost (campaign() also asserts none was missing)
    assert rep.children_killed == 2 and rep.children_not_restarted == 0, result.explain()
    assert result.logs["supervised"].count("child_restarted") >= 2, result.logs["supervised"]
    # and the killed child's leases were taken over, timed from the kill of that child
    assert rep.takeover_first.count >= 1, result.explain()
    assert rep.takeover_first.max <= result.config.takeover_bound, result.explain()
    assert result.runs_by_slot["supervised"] > 0, result.runs_by_slot


def test_a_database_restart_mid_run_loses_nothing() -> None:
    result = campaign("pg_restart", seed=202)
    assert result.report.finished == result.report.sent, result.explain()


def test_dropped_blackholed_and_slow_connections_keep_every_guarantee() -> None:
    # One direct worker: two always beat the proxied one to every claim on a loaded
    # machine, and a worker that holds nothing has nothing to be taken over.
    result = campaign("proxy_drop", "proxy_blackhole", "proxy_latency", seed=303, direct_workers=1)
    # A blackhole longer than the lease cut the proxied worker off: its work was taken over
    assert result.report.lease_expired_attempts >= 1, result.explain()
    assert result.runs_by_slot["proxied"] > 0, result.runs_by_slot


@pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_NEEDED)
def test_a_partitioned_worker_is_taken_over_and_its_late_writes_are_fenced() -> None:
    reason = netns.available()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    result = campaign("partition", seed=404)
    rep = result.report
    assert rep.lease_expired_attempts >= 1 and rep.takeover_first.count >= 1, result.explain()
    # The cut-off worker came back and was told it lost what it held
    assert "lease_lost" in result.logs["netns"], result.logs["netns"][-2000:]
    assert result.runs_by_slot["netns"] > 0, result.runs_by_slot


@pytest.mark.skipif(not faketime_library(), reason="needs faketime (apt-get install faketime)")
def test_a_worker_with_a_far_off_clock_never_changes_ownership() -> None:
    result = campaign("clock", seed=505, faults=3)
    rep = result.report
    # The skewed workers ran tasks, and no lease expired or ran twice: lease time is the
    # database's, whatever a worker's clock says
    assert result.runs_by_slot["skewed"] > 0, result.runs_by_slot
    assert rep.lease_expired_attempts == 0, result.explain()
    assert rep.tasks_run_more_than_once == 0, result.explain()


# The fence of complete(): the owner must match the running row, and the attempt the
# outcome's.
FENCE = (
    re.compile(
        r"(WHERE t\.id = ANY \(p_ids\) AND t\.state = 'running') AND t\.lease_owner = p_worker"
    ),
    re.compile(r"(JOIN input i ON i\.id = h\.id) AND i\.attempt = h\.attempt"),
)


def remove_complete_fence(conn: psycopg.Connection[Any], schema: str) -> None:
    """Replace ``schema``'s functions with ones whose ``complete()`` takes any outcome for a
    running task, whoever sends it and for whichever attempt."""
    text = sqlfiles.functions_sql(schema).decode()
    for part in FENCE:
        text, found = part.subn(r"\1", text)
        assert found == 1, "complete()'s fence changed shape: update FENCE to match it"
    conn.execute(text.encode())


def two_registered_workers(
    db: psycopg.Connection[Any], schema: str, task_name: str, first_pid: int
) -> tuple[FakeWorker, FakeWorker, dict[Any, int]]:
    """Workers A and B for ``task_name``, registered with pids ``first_pid`` and the next
    one, beside the campaign's table of task runs. Returns A, B and their pids."""
    db.execute(sql.SQL(EFFECTS_DDL.replace("{schema}", "{s}")).format(s=sql.Identifier(schema)))
    a, b = FakeWorker(db, schema, [task_name]), FakeWorker(db, schema, [task_name])
    pids = {a.id: first_pid, b.id: first_pid + 1}
    for w in (a, b):
        w.run(
            "worker_register", worker=w.id, host="chaos", pid=pids[w.id], queues=["default"],
            concurrency=1, version="test",
        )  # fmt: skip
    return a, b, pids


@pytest.mark.parametrize("fence", ["intact", "removed"])
def test_the_checker_reports_an_outcome_written_after_the_lease_was_lost(
    registry: Registry, db: psycopg.Connection[Any], schema: str, fence: str
) -> None:
    @registry.task(name="chaos.fenced")
    def fenced(payload: dict) -> None: ...

    fenced.send({})
    if fence == "removed":
        remove_complete_fence(db, schema)
    a, b, pids = two_registered_workers(db, schema, "chaos.fenced", 4_000_001)

    def ran(w: FakeWorker, task_id: int, attempt: int) -> None:
        db.execute(
            sql.SQL(
                "INSERT INTO {}.chaos_effects (run_id, task_id, attempt, pid) "
                "VALUES (gen_random_uuid(), %s, %s, %s)"
            ).format(sql.Identifier(schema)),
            (task_id, attempt, pids[w.id]),
        )

    # Given A ran attempt 1 and lost its lease, and B took the task over and runs it
    [(tid, first)] = a.claim()
    ran(a, tid, first)
    expire_now(db, tid)
    reap(b)
    [(_, second)] = b.claim()
    ran(b, tid, second)
    # When A's late outcome arrives while B still runs the task
    late = a.complete(tid, first)
    during = Monitor("", schema, list, time.monotonic()).run_once(db)
    b.complete(tid, second)
    after = check(db, schema, [tid])
    if fence == "intact":
        # Then the fence refused it and the checker, during the run and after, finds nothing
        assert late == {} and during is None and after.ok, (during, after.violations())
        return
    # Then the outcome was taken from the worker that had lost the lease, and the checker
    # says so during the run (with its time) and after it
    assert late == {tid: "succeeded"}
    assert during is not None and any("stale_outcomes" in v for v in during.violations), during
    assert after.stale_outcomes == 1 and after.misattributed_attempts == 1, after.examples
    assert not after.ok


def taken_over_once(
    db: psycopg.Connection[Any], schema: str, registry: Registry
) -> tuple[int, FakeWorker, FakeWorker, dict[Any, int]]:
    """A task claimed by A, whose lease then expired: A began it 3 s ago (by the database
    clock) and its lease ended 1 s ago. Returns the task, A, B and their pids."""

    @registry.task(name="chaos.taken")
    def taken(payload: dict) -> None: ...

    taken.send({})
    a, b, pids = two_registered_workers(db, schema, "chaos.taken", 4_000_011)
    [(tid, _)] = a.claim()
    db.execute(
        "UPDATE tasks SET started_at = now() - interval '3 seconds', "
        "lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (tid,),
    )
    return tid, a, b, pids


@pytest.mark.parametrize("restart", ["before the fault", "during the takeover"])
def test_a_takeover_the_database_was_down_for_is_measured_apart(
    registry: Registry, db: psycopg.Connection[Any], schema: str, restart: str
) -> None:
    # Given A was killed 2 s ago, mid-attempt, and B took its task over just now
    tid, a, b, pids = taken_over_once(db, schema, registry)
    reap(b)
    [(_, second)] = b.claim()
    for attempt, pid in ((1, pids[a.id]), (second, pids[b.id])):  # each run's side effect
        db.execute(
            "INSERT INTO chaos_effects (run_id, task_id, attempt, pid) "
            "VALUES (gen_random_uuid(), %s, %s, %s)",
            (tid, attempt, pid),
        )
    b.complete(tid, second)
    now: datetime = db.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    kill = Fault("kill", now - timedelta(seconds=2), (pids[a.id],))
    # When a database restart came before the kill, or between the kill and the takeover
    if restart == "before the fault":
        down = Fault("pg_restart", now - timedelta(seconds=6), until=now - timedelta(seconds=5))
    else:
        down = Fault("pg_restart", now - timedelta(seconds=1), until=now - timedelta(seconds=0.5))
    rep = check(db, schema, [tid], [kill, down], takeover_bound=3.67)
    assert rep.ok, rep.violations()
    if restart == "before the fault":
        # Then the takeover is judged against the bound
        assert (rep.takeover_first.count, rep.takeover_db_down.count) == (1, 0), rep
    else:
        # Then it waited for the server, not for the lease protocol: it is measured apart
        assert (rep.takeover_first.count, rep.takeover_db_down.count) == (0, 1), rep


@pytest.mark.parametrize("worker", ["dead", "back"])
def test_a_fault_lasts_until_the_leases_it_left_are_taken_over(
    registry: Registry, db: psycopg.Connection[Any], schema: str, worker: str
) -> None:
    # Given a campaign looking at the task a faulted worker A held while its lease was valid
    tid, a, b, pids = taken_over_once(db, schema, registry)
    db.execute(
        "UPDATE tasks SET lease_expires_at = now() + interval '1 minute' WHERE id = %s", (tid,)
    )
    camp = Campaign(CampaignConfig(seed=1))
    camp.conn, camp.schema = db, schema
    held = camp._held_by(pids[a.id])
    dead = worker == "dead"
    assert held == {tid: 1}
    # Then a dead worker's valid lease is still to be taken over; one a worker that came
    # back holds (and renews) is not
    assert camp._settled(held, dead=dead) is (not dead)
    # and once the lease expired, then while the task waits reaped but not yet claimed,
    # the takeover is pending whoever held it
    expire_now(db, tid)
    assert camp._settled(held, dead=dead) is False
    reap(b)
    assert camp._settled(held, dead=dead) is False
    # and the fault is over once the next attempt started
    [(_, second)] = b.claim()
    assert second == 2 and camp._settled(held, dead=dead) is True
