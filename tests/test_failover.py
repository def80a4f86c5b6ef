"""Faults tier: the PostgreSQL primary fails over under a fleet, with a real HA manager.

``chaos.failover`` on a cluster of ``chaos.ha``: etcd and three Patroni nodes, each in
a network namespace of its own, one synchronous standby. Two real worker processes and
a sender run on a DSN naming the three nodes while the primary is taken away once in
each way (its machine killed, its link cut, a planned switchover); then the same
fleet reaches the cluster through a HAProxy that follows Patroni's REST API. ``make
chaos-failover`` runs twenty of each, and the asynchronous case.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from chaos import failover, ha
from chaos.pgbouncer import PGBOUNCER
from tenure._db.connect import DEAD_PEER_S, is_transient
from tenure._store import link as worker_link
from tenure._store.worker import AsyncStore
from tenure.errors import DatabaseError
from tests.conftest import tenure_cli

pytestmark = pytest.mark.faults

LEASE = 5.0
HEARTBEAT = LEASE / 3
SKEW = 3.0


@pytest.fixture
def cluster_ready() -> None:
    reason = ha.available()
    if reason is not None:
        pytest.skip(f"no HA cluster here: {reason}")


def test_a_fleet_follows_the_primary_through_a_crash_a_cut_and_a_switchover(
    cluster_ready: None, tmp_path: Path
) -> None:
    seen: dict[str, object] = {}

    def inspect(cluster: ha.Cluster, schema: str) -> None:
        # What an operator sees on a DSN of all three nodes, and on a standby alone,
        # once the old primary streams from the new one
        primary = cluster.wait_healthy()
        standby = next(n for n in cluster.nodes if n is not primary)
        on_all = tenure_cli("status", "--dsn", cluster.dsn(), "--schema", schema, "--json")
        seen["status"] = (primary.address, json.loads(on_all.stdout)["database"])
        only = standby.dsn
        text = tenure_cli("status", "--dsn", only, "--schema", schema)
        seen["standby_status"] = (standby.address, text.stdout.splitlines()[:1])

        # and a worker's connection that reaches a standby refuses it, as transient
        async def renew_on_standby() -> DatabaseError:
            store = AsyncStore(only, schema, "probe")
            try:
                await store.set_state(worker=uuid.UUID(int=0), state="draining")
            except DatabaseError as exc:
                return exc
            finally:
                await store.close()
            raise AssertionError("a standby accepted a worker's statement")

        seen["refusal"] = asyncio.run(renew_on_standby())

        # and a session held open on the standby is seen by the campaign's watch
        with psycopg.connect(only, application_name="tenure-probe-held"):
            time.sleep(0.5)

        # and on this primary, which has a synchronous standby, a worker's commits wait
        async def worker_commit_setting() -> Any:
            link = AsyncStore(cluster.dsn(), schema, "probe").link
            try:
                cur = await (await link.connection()).execute("SHOW synchronous_commit")
                return await cur.fetchone()
            finally:
                await link.close()

        saw = worker_link.DURABILITY.synchronous
        try:
            seen["synchronous_commit"] = asyncio.run(worker_commit_setting())
        finally:  # this test process is no worker: the others run against other servers
            worker_link.DURABILITY.synchronous = saw

    # Given a fleet and a steady stream on a three-node cluster with a synchronous standby
    # When the primary is switched over, then killed, then cut off
    result = failover.run(lease=LEASE, logs=tmp_path / "run", inspect=inspect)
    print(result.summary())

    # Then nothing acknowledged was lost and no invariant broke
    assert result.ok, result.summary()
    rep = result.report
    assert result.sent > 0 and rep.lost == 0 and not result.acknowledged_lost
    assert (rep.overlapping_leases, rep.stale_outcomes, rep.misattributed_attempts) == (0, 0, 0)
    assert [f.kind for f in result.failovers] == list(failover.KINDS)
    for f in result.failovers:
        # And each time a new primary took over and the fleet claimed on it
        assert f.new != f.old and f.first_claim_seconds is not None, f
        # And every worker's heartbeat reached it within a heartbeat of it accepting
        # writes, plus the time a dead connection takes to be noticed
        assert len(f.workers_back_seconds) == 2, f
        assert max(f.workers_back_seconds) <= HEARTBEAT + DEAD_PEER_S, f
    # And no worker session stayed on a standby for a heartbeat (the watch that says
    # so saw the session this test held open there)
    held = [s for s in result.standby.seen.values() if s.application == "tenure-probe-held"]
    assert held and held[0].open_seconds >= 0.3, result.standby.summary()
    workers = [s for s in result.standby.seen.values() if s not in held]
    assert all(s.open_seconds < HEARTBEAT for s in workers), result.standby.summary()
    # And each worker said so once per failover, naming both servers
    assert result.worker_failover_lines == 2 * len(result.failovers)

    # And `tenure status` named the primary, and a standby as a standby
    primary_address, database = seen["status"]  # type: ignore[misc]
    assert database["server"] == f"{primary_address}:{ha.PG_PORT}"
    assert database["role"] == "primary"
    standby_address, first_line = seen["standby_status"]  # type: ignore[misc]
    assert first_line and first_line[0].startswith(f"database {standby_address}:5432 (standby")
    # And the workers' commits waited for the synchronous standby
    assert seen["synchronous_commit"] == ("on",)
    # And a worker's statement on a standby was refused as transient, saying why
    refusal = seen["refusal"]
    assert isinstance(refusal, DatabaseError) and is_transient(refusal)
    assert isinstance(refusal.__cause__, psycopg.errors.ReadOnlySqlTransaction)
    assert "is a standby" in str(refusal)


@pytest.mark.parametrize("via", ["haproxy", "pgbouncer"])
def test_a_fleet_behind_a_proxy_or_a_pooler_follows_the_primary(
    cluster_ready: None, tmp_path: Path, via: str
) -> None:
    if shutil.which("haproxy") is None or not Path(PGBOUNCER).exists():
        pytest.skip("haproxy and pgbouncer are needed (apt-get install haproxy pgbouncer)")
    # Given a fleet and a stream whose DSN names one address: a HAProxy on /primary, or
    # a PgBouncer in transaction mode (so --poll-only) whose one server is that HAProxy,
    # where the fleet's connections stay open to the pooler while the servers change
    # When the primary is switched over, then killed
    kinds = ("switchover", "crash")
    result = failover.run(lease=LEASE, logs=tmp_path / "run", kinds=kinds, via=via)
    print(result.summary())
    # Then nothing acknowledged was lost, no invariant broke, the fleet claimed on each
    # new primary, and each worker's heartbeat reached it
    assert result.ok, result.summary()
    assert result.sent > 0 and not result.acknowledged_lost and result.report.lost == 0
    assert [f.kind for f in result.failovers] == list(kinds)
    for f in result.failovers:
        assert f.new != f.old and f.first_claim_seconds is not None, f
        assert len(f.workers_back_seconds) == 2, f
    if via == "haproxy":
        # And, reconnecting through the proxy, each worker named the server behind it
        for f in result.failovers:
            assert max(f.workers_back_seconds) <= HEARTBEAT + DEAD_PEER_S, f
        assert result.worker_failover_lines == 2 * len(result.failovers)


def test_a_new_primary_whose_clock_is_off_is_followed_and_the_move_is_logged(
    cluster_ready: None, tmp_path: Path
) -> None:
    # Given a cluster whose nodes' clocks are 0, +3 and -3 seconds off, and a fleet on it
    # When the primary is switched over (its leases survive a switchover: the failover
    # takes less than a lease) and then killed
    kinds = ("switchover", "crash")
    result = failover.run(lease=LEASE, logs=tmp_path / "run", kinds=kinds, skew=SKEW)
    print(result.summary())
    # Then no invariant broke: a lease that the move shortened below zero was taken
    # over like one of a dead worker, its first owner fenced out
    assert result.ok, result.summary()
    assert result.sent > 0 and not result.acknowledged_lost and result.report.lost == 0
    rep = result.report
    assert (rep.overlapping_leases, rep.stale_outcomes, rep.misattributed_attempts) == (0, 0, 0)
    # And each worker's failover line said how far the database clock moved
    moved = [
        float(m)
        for log in (tmp_path / "run").glob("worker-*.log")
        for m in re.findall(r"database_failover .* clock_moved=([+-][\d.]+)s", log.read_text())
    ]
    assert len(moved) == 2 * len(kinds), moved
    assert all(min(abs(abs(m) - SKEW), abs(abs(m) - 2 * SKEW)) < 0.5 for m in moved), moved
