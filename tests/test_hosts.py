"""Acceptance tier: a fleet over three hosts on this machine; one host is cut off.

Each host is a network namespace the test makes (``chaos.netns.Host``): a veth pair
with private addresses (10.213.N.0/30) and, on the host end, a proxy through which
the host's one ``tenure worker`` reaches PostgreSQL (the embedded server's unix
socket, or the server named by ``TENURE_TEST_DATABASE_URL``). Cutting a host takes
the host end of its veth down: its worker keeps running, its connections stall, and
what it sent meanwhile arrives after the link is restored.

The takeover bound is measured from the cut: the database clock read just before the
link goes down. Nothing the cut host sends after that instant reaches the database
until the restore, so its last renewal was made before the cut (bytes already past
the veth land within the proxy's forwarding delay) and each of its leases expires at
most one lease after the cut; a live worker's reaper runs at least every heartbeat
interval and wakes an idle worker, which claims at once. Hence lease + heartbeat,
plus 1 s for the wake-up, the claim and a loaded machine. Each takeover must also
start after the expiry of the lease it replaces.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from chaos import netns
from tests.conftest import direct_url, eventually, worker_id_of
from tests.test_acceptance import db_now, running_held_by

pytestmark = pytest.mark.acceptance

LEASE = 2.0
HEARTBEAT = LEASE / 3
TAKEOVER_BOUND = LEASE + HEARTBEAT + 1.0
SLOTS = 3
TASK_S = 1.2  # shorter than a lease: the others are idle when the cut host's leases expire
LATER_S = 3.0  # a taken-over attempt runs on while the cut host's late writes arrive
HOST_NUMBERS = (221, 222, 223)  # outside the chaos campaign's 1..200


@pytest.fixture
def hosts(database_url: str) -> Iterator[list[netns.Host]]:
    """Three hosts; removed afterwards, also when the test fails."""
    reason = netns.available()
    if reason is not None:
        pytest.skip(f"network namespaces cannot be made here: {reason}")
    netns.sweep()
    made: list[netns.Host] = []
    try:
        for n in HOST_NUMBERS:
            made.append(netns.Host(n, direct_url(database_url)))
        yield made
    finally:
        for host in made:
            host.remove()


def attempts_of(db: psycopg.Connection[Any]) -> dict[int, list[tuple[Any, ...]]]:
    """Task id to its attempts: (attempt, worker_id, outcome, started_at, ended_at)."""
    by_task: dict[int, list[tuple[Any, ...]]] = {}
    for row in db.execute(
        "SELECT task_id, attempt, worker_id, outcome, started_at, ended_at FROM attempts "
        "ORDER BY task_id, attempt"
    ):
        by_task.setdefault(row[0], []).append(row[1:])
    return by_task


def story(db: psycopg.Connection[Any], held: list[int], log: str) -> str:
    """What a failure prints: the cut host's tasks, their attempts and its log's end."""
    rows = db.execute(
        "SELECT 'running', id, attempt, lease_owner, started_at, lease_expires_at FROM tasks "
        "WHERE id = ANY(%(held)s) UNION ALL SELECT state, id, attempt, NULL, NULL, finished_at "
        "FROM finished_tasks WHERE id = ANY(%(held)s) UNION ALL SELECT outcome, task_id, "
        "attempt, worker_id, started_at, ended_at FROM attempts WHERE task_id = ANY(%(held)s)",
        {"held": held},
    ).fetchall()
    veths = subprocess.run(["ip", "-br", "link", "show", "type", "veth"], capture_output=True)
    tail = ["-- the cut host's log:", log[-3000:], "-- veths now:", veths.stdout.decode()]
    return "\n".join([*map(repr, rows), *tail])


def test_a_cut_host_is_taken_over_in_time_and_rejoins_with_its_late_writes_fenced(
    fleet_app: Any, hosts: list[netns.Host], workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given one worker on each of three hosts, each running three tasks
    args = ("--lease", f"{LEASE}s", "--concurrency", str(SLOTS), "--poll-interval", "500ms")
    fleet = [workers(*args, dsn=h.dsn, prefix=h.namespace.command([])) for h in hosts]
    ids = [worker_id_of(db, w.pid) for w in fleet]
    pid_of = {wid: w.pid for wid, w in zip(ids, fleet, strict=True)}
    payload = {"s": TASK_S, "later_s": LATER_S}
    first = fleet_app.sleepy_where.send_many([payload] * (SLOTS * len(hosts)))
    eventually(
        lambda: all(len(running_held_by(db, wid)) == SLOTS for wid in ids),
        what="every host runs three tasks",
    )

    # When the link of the host that started its tasks last is cut while it holds them
    # (the others finish theirs first, so they have free slots when its leases expire)
    last = db.execute("SELECT lease_owner FROM tasks ORDER BY started_at DESC LIMIT 1")
    victim_id = last.fetchone()[0]
    victim, cut_off = fleet[ids.index(victim_id)], hosts[ids.index(victim_id)].namespace
    cut_at = db_now(db)  # read before the cut: the measured takeover can only be longer
    cut_off.cut()
    held = running_held_by(db, victim_id)
    assert held, "the cut host held no lease when its link went down"

    def wait(check: Any, what: str, timeout: float) -> None:
        try:
            eventually(check, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{story(db, held, victim.log())}") from None

    # Then the other hosts take each of its tasks over (attempt 2 started elsewhere)
    def taken_over() -> bool:
        row = db.execute(
            "SELECT count(*) FROM (SELECT id, attempt FROM tasks UNION ALL "
            "SELECT id, attempt FROM finished_tasks) t WHERE id = ANY(%s) AND attempt >= 2",
            (held,),
        ).fetchone()
        return row is not None and row[0] == len(held)

    wait(taken_over, "the cut host's tasks taken over", timeout=15)

    # When the link is restored while the new owners run those tasks
    restored_at = db_now(db)
    cut_off.restore()

    # Then the cut host's late outcomes reach the database and are fenced out
    def fenced(tid: int) -> bool:
        line = rf"lease_lost task={tid} attempt=1 \S+ outcome=succeeded: write fenced out"
        return re.search(line, victim.log()) is not None

    wait(lambda: all(fenced(tid) for tid in held), "its late outcomes fenced out", timeout=20)
    # And it rejoins: it claims and runs some of the next tasks
    second = fleet_app.sleepy_where.send_many([{"s": 0.5}] * (2 * SLOTS * len(hosts)))
    sent = [h.id for h in (*first, *second)]
    wait(
        lambda: db.execute("SELECT count(*) FROM finished_tasks").fetchone()[0] == len(sent),
        "every task finished",
        timeout=30,
    )

    # Then every task succeeded once, with the outcome of its last attempt's worker
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
    finished = {
        r[0]: r[1:]
        for r in db.execute("SELECT id, state, attempt, result FROM finished_tasks").fetchall()
    }
    attempts = attempts_of(db)
    assert sorted(finished) == sorted(attempts) == sorted(sent)
    for tid, (state, attempt, result) in finished.items():
        last_attempt, last_worker, last_outcome, _, _ = attempts[tid][-1]
        assert [a[2] for a in attempts[tid]].count("succeeded") == 1, attempts[tid]
        assert (state, last_outcome) == ("succeeded", "succeeded"), attempts[tid]
        assert (attempt, result) == (last_attempt, pid_of[last_worker]), attempts[tid]
    # And each task the cut host held: its attempt expired, another host's attempt started
    # after that expiry and within lease + heartbeat + 1 s of the cut, and that outcome stands
    delays = {}
    for tid in held:
        (n1, w1, o1, _, expired_at), (n2, w2, o2, started_at, _) = attempts[tid]
        assert (n1, w1, o1, n2, o2) == (1, victim_id, "lease_expired", 2, "succeeded")
        assert w2 != victim_id and finished[tid][2] == pid_of[w2]
        assert started_at >= expired_at, (tid, expired_at, started_at)
        delays[tid] = (started_at - cut_at).total_seconds()
    assert max(delays.values()) <= TAKEOVER_BOUND, (delays, TAKEOVER_BOUND)
    print(f"takeover after the cut: {sorted(round(d, 2) for d in delays.values())} s")
    # And the tasks ran on all three hosts, the cut host's again after it rejoined, cleanly:
    # every attempt it started since succeeded, and it fenced itself once, for the cut
    assert {a[1] for rows in attempts.values() for a in rows} == set(ids)
    rejoined = [a for h in second for a in attempts[h.id] if a[1] == victim_id]
    assert rejoined, "the cut host ran nothing after its link was restored"
    assert all(a[2] == "succeeded" and a[3] > restored_at for a in rejoined), rejoined
    assert victim.log().count("worker_self_fenced") == 1, victim.log()[-3000:]
