"""Chaos tier: short fixed-seed campaigns of each fault kind, judged by the invariant checker.

Each campaign runs real workers against a private embedded PostgreSQL (never the shared
one: it is restarted by one of these tests), injects its faults from a fixed seed and
fails if any invariant breaks: nothing lost, one valid lease at a time, only the last
attempt's outcome stands, duplicates only after a lost attempt, the limit holds, and
takeovers start within lease + heartbeat + 1 s. ``make chaos`` runs the long campaign.
"""

from __future__ import annotations

import os

import pytest

from chaos import netns
from chaos.driver import CampaignConfig, Result, run_campaign
from chaos.fleet import faketime_library

pytestmark = pytest.mark.acceptance

ROOT_NEEDED = "needs root for network namespaces (ip netns)"


def campaign(*kinds: str, seed: int, faults: int = 2, tasks: int = 300) -> Result:
    # Given a fleet over a steady stream of tasks, When the faults hit, Then the checker
    # finds every invariant intact (asserted by each test with the campaign's seed).
    result = run_campaign(
        CampaignConfig(
            seed=seed,
            tasks=tasks,
            faults_per_kind=faults,
            kinds=kinds,
            rate=25.0,
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


def test_a_database_restart_mid_run_loses_nothing() -> None:
    result = campaign("pg_restart", seed=202)
    assert result.report.finished == result.report.sent, result.explain()


def test_dropped_blackholed_and_slow_connections_keep_every_guarantee() -> None:
    result = campaign("proxy_drop", "proxy_blackhole", "proxy_latency", seed=303)
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
