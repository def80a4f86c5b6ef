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
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chaos import netns
from chaos.app import EFFECTS_DDL
from chaos.checker import check
from chaos.driver import CampaignConfig, Result, run_campaign
from chaos.fleet import faketime_library
from chaos.monitor import Monitor
from tenure import Registry
from tenure._db import sqlfiles
from tests.test_queue import FakeWorker, expire_now, reap

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


# The fence of complete(): the attempt and the owner must match the running row.
FENCE = re.compile(
    r"AND i\.attempt = t\.attempt(\s+WHERE t\.state = 'running') AND t\.lease_owner = p_worker"
)


def remove_complete_fence(conn: psycopg.Connection[Any], schema: str) -> None:
    """Replace ``schema``'s functions with ones whose ``complete()`` takes any outcome for a
    running task, whoever sends it and for whichever attempt."""
    text, found = FENCE.subn(r"\1", sqlfiles.functions_sql(schema).decode())
    assert found == 1, "complete()'s fence changed shape: update FENCE to match it"
    conn.execute(text.encode())


@pytest.mark.parametrize("fence", ["intact", "removed"])
def test_the_checker_reports_an_outcome_written_after_the_lease_was_lost(
    registry: Registry, db: psycopg.Connection[Any], schema: str, fence: str
) -> None:
    @registry.task(name="chaos.fenced")
    def fenced(payload: dict) -> None: ...

    fenced.send({})
    db.execute(sql.SQL(EFFECTS_DDL.replace("{schema}", "{s}")).format(s=sql.Identifier(schema)))
    if fence == "removed":
        remove_complete_fence(db, schema)
    a, b = FakeWorker(db, schema, ["chaos.fenced"]), FakeWorker(db, schema, ["chaos.fenced"])
    pids = {a.id: 4_000_001, b.id: 4_000_002}
    for w in (a, b):
        w.run(
            "worker_register", worker=w.id, host="chaos", pid=pids[w.id], queues=["default"],
            concurrency=1, version="test",
        )  # fmt: skip

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
