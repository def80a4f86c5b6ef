"""The worker's control plane in-process, on a fake store and a clock the test moves.

No database and no worker process: the claim loop, its outcomes, the heartbeat and
the drain run on :class:`tests.support.fake_store.FakeStore`, whose statements keep
leases, attempts and fencing as the real ones do (``tests/test_store_contract.py``
holds it to them), and :class:`tests.support.clock.FakeClock`, so every wait on time
ends when the test moves the clock. The real-database and real-process tests
(``test_worker.py``, ``test_acceptance.py``, ``test_chaos.py``) cover the rest.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from tenure import Registry
from tenure._maintenance.reaper import Reaper
from tenure._worker import heartbeat
from tenure._worker.config import WorkerConfig
from tenure._worker.heartbeat import FenceWatch
from tenure._worker.service import Streak
from tenure._worker.worker import Worker
from tenure.errors import DatabaseError
from tests.support.clock import FakeClock, settle
from tests.support.fake_rows import lost_connection
from tests.support.fake_store import FakeStore
from tests.support.parts import Runs, claim_loop, heartbeat_of

T = TypeVar("T")
LEASE = timedelta(seconds=10)


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


def names(store: FakeStore) -> list[str]:
    """The statements the store ran, in order (the claim loop's and the heartbeat's)."""
    return [name for name, _ in store.calls]


def test_claims_fill_the_slots_and_top_up_the_prefetch_in_batches() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        store.send(20)
        runs = Runs()
        claims = claim_loop(store, concurrency=2, prefetch=4, run=runs, clock=clock)
        # Given a worker with two slots and a prefetch of four
        # When it makes its first pass
        first = await claims.run_once()
        await settle()
        # Then one claim asked for six: two run, four wait
        assert store.calls == [("claim", {"limit": 6})]
        assert (first.claimed, len(runs.running), claims.prefetched()) == (6, 2, 4)
        assert first.again is False  # no slot free: nothing to do until one is
        # When one attempt ends, a waiting one takes its slot, and one free place in
        # the buffer is not worth a claim: the outcome is written alone
        runs.finish(runs.started[:1])
        await settle()
        assert (len(runs.running), claims.prefetched()) == (2, 3)
        lone = await claims.run_once()
        assert store.calls[-1] == ("complete", {"outcomes": 1})
        # and the loop then waits for a wake or its poll, not a spin of passes
        assert (lone.again, lone.retry_in) == (False, math.inf)
        # When a second one ends, two places are free: one claim tops the buffer up,
        # and the same statement writes the outcome
        runs.finish(runs.started[1:2])
        await settle()
        topped = await claims.run_once()
        assert store.calls[-1] == ("complete_and_claim", {"outcomes": 1, "limit": 2})
        assert (topped.claimed, topped.settled, claims.prefetched()) == (2, 1, 4)
        assert [store.tasks[i].state for i in runs.started[:2]] == ["succeeded"] * 2

    run(scenario)


def test_outcomes_pending_at_a_claim_are_written_by_that_claim() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        a, b, c, d = store.send(4)
        runs = Runs()
        claims = claim_loop(store, concurrency=2, run=runs, clock=clock)
        await claims.run_once()
        await settle()
        # Given both running attempts ended, one with an error
        runs.finish([a])
        runs.finish([b], "error", error="boom", delay=0.0)
        await settle()
        # When the next pass claims
        done = await claims.run_once()
        # Then one statement recorded both outcomes and claimed two more
        assert store.calls[-1] == ("complete_and_claim", {"outcomes": 2, "limit": 2})
        assert (done.settled, done.claimed) == (2, 2)
        assert (store.tasks[a].state, store.tasks[b].state) == ("succeeded", "running")
        assert store.tasks[b].errors == 1 and store.outcomes_of(b) == ["error"]
        assert claims.events["task_succeeded"] == claims.events["task_retried"] == 1
        await settle()
        assert sorted(runs.running) == [b, c]  # the retry was claimed again
        assert len(claims.outcomes) == 0

    run(scenario)


def test_outcomes_go_out_at_once_when_no_claim_is_due() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        [only] = store.send(1)
        runs = Runs()
        claims = claim_loop(store, concurrency=4, run=runs, clock=clock)
        # Given an idle fleet: the claim found less than it asked for
        claims.start()
        await settle()
        assert store.calls == [("claim", {"limit": 4})]
        # When the one task ends
        runs.finish([only])
        await settle()
        # Then its outcome is written alone at once, with no claim and no poll
        assert store.calls[-1] == ("complete", {"outcomes": 1})
        assert store.tasks[only].state == "succeeded"
        # And the next claim waits for the poll
        assert names(store).count("claim") == 1
        await clock.advance(1.0)
        assert names(store).count("claim") == 2
        await claims.stop()

    run(scenario)


def test_a_claim_a_rate_limit_held_back_is_made_again_when_the_bucket_can_pay() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        store.send(1)
        # Given claims that a rate limit holds back, with tokens again in 0.2 s
        store.rate_wait = 0.2
        claims = claim_loop(store, concurrency=4, run=Runs(), clock=clock)
        claims.start()
        await settle()
        assert names(store).count("claim") == 1
        # Then no claim is made before the bucket can pay, and one is soon after, with
        # no NOTIFY and long before the poll
        await clock.advance(0.19)
        assert names(store).count("claim") == 1
        await clock.advance(0.07)
        assert names(store).count("claim") == 2
        # And with no rate in the way, the next one waits for the poll again
        store.rate_wait = None
        await clock.advance(0.3)
        assert names(store).count("claim") == 3  # the one the last wait asked for
        await clock.advance(0.3)
        assert names(store).count("claim") == 3
        await claims.stop()

    run(scenario)


def test_outcomes_are_written_while_claims_keep_failing(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        a, b = store.send(2, name="t")
        store.send(2, name="t")
        runs = Runs()
        claims = claim_loop(store, concurrency=2, run=runs, clock=clock)
        await claims.run_once()
        await settle()
        # Given claims that fail from now on, before they change anything
        store.fail("complete_and_claim", lost_connection(), times=1000)
        store.fail("claim", lost_connection(), times=1000)
        claims.start()
        # When both attempts end
        runs.finish([a, b])
        await settle()
        await clock.step(0.1, 10)
        # Then their outcomes are written on their own while claims still fail
        assert (store.tasks[a].state, store.tasks[b].state) == ("succeeded", "succeeded")
        assert names(store).count("complete") >= 1
        assert names(store).count("complete_and_claim") + names(store).count("claim") > 3
        assert len(claims.outcomes) == 0 and not runs.running
        await claims.stop()

    with caplog.at_level(logging.WARNING, logger="tenure._worker.claim_loop"):
        run(scenario)
    assert any(r.getMessage().startswith("claim_failed ") for r in caplog.records)


def test_a_refused_batch_is_written_row_by_row_and_the_bad_outcome_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        good, bad, other = store.send(3)
        runs = Runs()
        claims = claim_loop(store, concurrency=3, run=runs, clock=clock)
        await claims.run_once()
        await settle()
        # Given three outcomes, one of which the database refuses to store
        store.refuse(lambda o: o.result == '"\\u0000"')
        runs.finish([good, other], result='"fine"')
        runs.finish([bad], result='"\\u0000"')
        await settle()
        # When the claim loop writes them
        claims.start()
        await clock.step(0.1, 20)
        # Then the two good ones are recorded as they are, and the bad one as a failure
        # that says why: none held back the others
        assert store.states() == {good: "succeeded", bad: "failed", other: "succeeded"}
        assert store.tasks[good].result == '"fine"' and store.tasks[bad].result is None
        assert "succeeded outcome could not be recorded" in (store.tasks[bad].last_error or "")
        assert claims.events["outcomes_replaced"] == 1
        assert claims.events["task_succeeded"] == 2 and claims.events["task_failed"] == 1
        singles = [p for name, p in store.calls if name == "complete" and p["outcomes"] == 1]
        assert len(singles) >= 3  # split: one statement per outcome
        await claims.stop()

    with caplog.at_level(logging.ERROR, logger="tenure._worker.completer"):
        run(scenario)
    assert any(r.getMessage().startswith("outcome_unwritable ") for r in caplog.records)


def test_a_commit_whose_answer_was_lost_is_recognised_not_reported_as_fenced() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        a, b, c, d = store.send(4)
        runs = Runs()
        claims = claim_loop(store, concurrency=2, lease=LEASE, run=runs, clock=clock)
        beat = heartbeat_of(claims, store, clock)
        store.add_worker(claims.worker_id, ("default",), 2)
        await claims.run_once()
        await settle()
        # Given the claim carrying two outcomes commits but its answer is lost
        store.fail("complete_and_claim", lost_connection(), after_commit=True)
        runs.finish([a, b])
        await settle()
        await claims.run_once()
        assert (store.tasks[a].state, store.tasks[c].state) == ("succeeded", "running")
        # When the claim loop writes the outcomes again
        await claims.run_once()
        # Then it finds them recorded by its own earlier try: done, not fenced
        assert names(store)[-2:] == ["complete", "attempts_recorded"]
        assert claims.events["task_recorded_before_reconnect"] == 2
        assert claims.events["lease_lost"] == claims.events["fenced_writes"] == 0
        assert len(claims.holdings) == 0 and len(claims.outcomes) == 0
        # And the rows that claim took, never received, are handed back by a heartbeat
        # once half a lease old, at no cost
        await clock.advance(LEASE.total_seconds() / 2 + 0.1)
        await beat.run_once()
        assert (store.tasks[c].state, store.tasks[d].state) == ("queued", "queued")
        assert store.outcomes_of(c) == ["released"] and store.tasks[c].crashes == 0

    run(scenario)


def test_heartbeats_renew_leases_and_the_worker_fences_itself_when_they_fail() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        ran1, ran2, waited = store.send(3)
        runs = Runs()
        claims = claim_loop(store, concurrency=2, prefetch=1, lease=LEASE, run=runs, clock=clock)
        beat = heartbeat_of(claims, store, clock)
        store.add_worker(claims.worker_id, ("default",), 2)
        await claims.run_once()
        await settle()
        contexts = {i: claims.holdings.get(i).context for i in (ran1, ran2, waited)}  # type: ignore[union-attr]
        # Given a renewal a few seconds in: the leases run a lease from then
        await clock.advance(3)
        await beat.run_once()
        assert store.tasks[ran1].lease_expires_at == clock.now() + LEASE.total_seconds()
        # When every renewal fails from then on, for most of a lease
        store.fail("renew", lost_connection(), times=1000)
        for _ in range(2):
            await clock.advance(beat.interval)
            with pytest.raises(DatabaseError):
                await beat.run_once()
        assert not beat.fenced  # silent for two thirds of a lease: not yet
        await clock.advance(1.5)
        with pytest.raises(DatabaseError):
            await beat.run_once()
        # Then the worker fences itself: every task is lost to it, claims stop
        assert beat.fenced and len(claims.holdings) == 0
        assert all(ctx.lease_lost.is_set() for ctx in contexts.values())
        assert claims.holdings.surrendered() == {ran1, ran2}  # they ran: the reaper decides
        store.send(2)
        await claims.run_once()
        assert "claim" not in names(store)[-1:]
        # When renewals work again
        store._faults.clear()
        await clock.advance(1)
        await beat.run_once()
        # Then it is back, the prefetched task that never ran is handed back at no cost,
        # and the ones that ran wait for the reaper, which counts a crash
        assert not beat.fenced
        assert store.tasks[waited].state == "queued" and store.tasks[waited].crashes == 0
        assert (store.tasks[ran1].state, store.tasks[ran2].state) == ("running", "running")
        await clock.advance(LEASE.total_seconds())
        reaped = await Reaper(store, LEASE / 3, LEASE * 4, clock).run_once()
        assert sorted(reaped.requeued) == [ran1, ran2] and store.tasks[ran1].crashes == 1
        await beat.run_once()
        assert claims.holdings.surrendered() == frozenset()
        # And claiming goes on
        assert (await claims.run_once()).claimed > 0

    run(scenario)


def test_the_first_renewal_after_a_failover_says_so_once_naming_both_servers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock, server="10.0.0.1:5432")
        claims = claim_loop(store, concurrency=2, lease=LEASE, clock=clock)
        beat = heartbeat_of(claims, store, clock)
        store.add_worker(claims.worker_id, ("default",), 2)
        # Given renewals that succeed on one server: nothing to say
        await beat.run_once()
        await clock.advance(beat.interval)
        await beat.run_once()
        assert "database_" not in caplog.text
        # When the primary dies: two renewals fail, then another server answers
        store.fail("renew", lost_connection(), times=2)
        for _ in range(2):
            await clock.advance(beat.interval)
            with pytest.raises(DatabaseError):
                await beat.run_once()
        store.server, store.clock_offset = "10.0.0.2:5432", 5.2  # its clock 5.2 s ahead
        await clock.advance(1)
        await beat.run_once()
        # Then one line names both servers, how long no renewal succeeded, and how far
        # the database clock moved, which every lease granted before it lost
        line = "database_failover worker=%s from=10.0.0.1:5432 to=10.0.0.2:5432 without_database"
        assert caplog.text.count(line % claims.worker_id) == 1, caplog.text
        assert f"without_database={2 * beat.interval + 1:.1f}s clock_moved=+5.2s" in caplog.text
        assert "leases granted before it are that much shorter now" in caplog.text
        # And the renewals after it say nothing more
        await clock.advance(beat.interval)
        await beat.run_once()
        assert caplog.text.count("database_") == 1
        # When the same server comes back after a failure (a restart, not a failover)
        store.fail("renew", lost_connection())
        await clock.advance(beat.interval)
        with pytest.raises(DatabaseError):
            await beat.run_once()
        await clock.advance(beat.interval)
        await beat.run_once()
        # Then it says the database is back, on the same server
        assert "database_back" in caplog.text and "server=10.0.0.2:5432" in caplog.text

    with caplog.at_level(logging.INFO, logger="tenure._worker.heartbeat"):
        run(scenario)


def test_renewals_are_tried_again_sooner_while_they_fail_so_a_new_primary_is_found_fast() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        claims = claim_loop(store, concurrency=2, lease=LEASE, clock=clock)
        beat = heartbeat_of(claims, store, clock)
        store.add_worker(claims.worker_id, ("default",), 2)
        beat.start()
        try:
            await settle()
            # Given a heartbeat renewing once an interval
            await clock.advance(3 * beat.interval)
            healthy = store.count("renew")
            assert 3 <= healthy <= 4
            # When the database goes away for three intervals
            store.fail("renew", lost_connection(), times=10**6)
            await clock.advance(3 * beat.interval)
            # Then it tried again at least once a quarter interval, not once an interval
            failing = store.count("renew") - healthy
            assert failing >= 8, failing  # once an interval would be 3 or 4
            # When the database answers again, within a quarter interval it renews, and
            # then back to once an interval
            store.recover("renew")
            await clock.advance(heartbeat.RETRY_FRACTION * beat.interval)
            assert not beat.failing
            before = store.count("renew")
            await clock.advance(3 * beat.interval)
            assert store.count("renew") - before <= 3
        finally:
            await beat.stop()

    run(scenario)


def test_the_watchdog_fences_while_a_renewal_hangs_and_a_late_answer_does_not_unfence() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        store.send(1)
        runs = Runs()
        claims = claim_loop(store, lease=LEASE, run=runs, clock=clock)
        beat = heartbeat_of(claims, store, clock)
        watch = FenceWatch(beat, clock)
        await claims.run_once()
        await settle()
        # Given a renewal that hangs for a whole lease
        gate = store.block("renew")
        late = asyncio.create_task(beat.run_once())
        await settle()
        await clock.advance(LEASE.total_seconds())
        # When the watchdog looks, Then the worker is fenced though the renewal never failed
        assert await watch.run_once() is True
        assert len(claims.holdings) == 0 and runs.running  # the coroutine is told, not killed
        # When the hung renewal is answered at last, Then it proves nothing: still fenced
        gate.set()
        await late
        assert beat.fenced
        # And a renewal sent now ends it
        await beat.run_once()
        assert not beat.fenced and await watch.run_once() is False

    run(scenario)


def test_waiting_claims_are_handed_back_while_another_worker_is_idle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        ids = store.send(6)
        runs = Runs()
        claims = claim_loop(store, concurrency=2, prefetch=2, lease=LEASE, run=runs, clock=clock)
        beat = heartbeat_of(claims, store, clock)
        store.add_worker(claims.worker_id, ("default",), 2)
        await claims.run_once()
        await settle()
        assert claims.prefetched() == 2
        # Given another live worker on the same queue with free slots
        store.add_worker(uuid.uuid4(), ("default",), 4)
        # When a heartbeat hears of it just after the claim
        heard = await beat.run_once()
        assert heard.idle_elsewhere == 4
        # Then the prefetched tasks are kept: they may start any moment
        assert claims.prefetched() == 2
        # But when they are still waiting at the next heartbeat
        await clock.advance(LEASE.total_seconds() / 3)
        await beat.run_once()
        # Then the waiting claims are handed back, spending no attempt
        assert claims.prefetched() == 0
        await claims.run_once()
        waited = ids[2:4]
        assert [store.tasks[i].state for i in waited] == ["queued", "queued"]
        assert [store.outcomes_of(i) for i in waited] == [["released"], ["released"]]
        assert all(store.tasks[i].errors == store.tasks[i].crashes == 0 for i in waited)
        # And nothing more is prefetched: a freed slot claims one task, not three
        runs.finish(runs.started[:1])
        await settle()
        await claims.run_once()
        assert store.calls[-1] == ("complete_and_claim", {"outcomes": 1, "limit": 1})

    with caplog.at_level(logging.INFO, logger="tenure._worker.claim_loop"):
        run(scenario)
    assert any(
        r.getMessage().endswith("released=2 reason=idle capacity elsewhere") for r in caplog.records
    )


def test_a_buffer_that_turns_over_between_heartbeats_keeps_its_prefetch() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        store = FakeStore(clock)
        store.send(12)
        runs = Runs()
        claims = claim_loop(store, concurrency=2, prefetch=2, lease=LEASE, run=runs, clock=clock)
        beat = heartbeat_of(claims, store, clock)
        store.add_worker(claims.worker_id, ("default",), 2)
        # Given another live worker on the same queue with free slots throughout
        store.add_worker(uuid.uuid4(), ("default",), 4)
        await claims.run_once()
        await settle()
        for _ in range(3):
            # When a heartbeat comes while two tasks wait, and by the next one those
            # have started and fresh ones wait in their place (fast tasks, a stream)
            assert (await beat.run_once()).idle_elsewhere == 4
            assert claims.prefetched() == 2
            runs.finish(list(runs.running))
            await settle()
            await claims.run_once()
            await settle()
            await clock.advance(LEASE.total_seconds() / 3)
        # Then nothing was handed back, and each claim still asked for the prefetch
        assert not any(store.outcomes_of(i) == ["released"] for i in store.tasks)
        limits = [c[1]["limit"] for c in store.calls if c[0] in ("claim", "complete_and_claim")]
        assert limits == [4, 2, 2, 2]

    run(scenario)


@dataclass
class InProcess:
    """A whole worker running in this process on a fake store, its tasks held by gates."""

    clock: FakeClock
    store: FakeStore
    worker: Worker
    ids: list[int]  # the queued tasks, the n-th with payload {"n": n}
    gates: dict[int, asyncio.Event]  # task n returns once gates[n] is set
    running: asyncio.Task[int]  # worker.run()


async def in_process(tasks: int, **config: Any) -> InProcess:
    clock = FakeClock()
    store = FakeStore(clock)
    gates: dict[int, asyncio.Event] = {}
    ids = [store.send(1, payload=f'{{"n": {n}}}')[0] for n in range(tasks)]
    reg = Registry("postgresql://unused", schema="fake")

    @reg.task(name="t")
    async def t(payload: dict[str, int]) -> None:
        await gates.setdefault(payload["n"], asyncio.Event()).wait()

    settings = WorkerConfig(queues=("default",), lease=LEASE, **config)
    worker = Worker(reg, settings, stores=store, clock=clock)
    running = asyncio.create_task(worker.run())
    await settle()
    return InProcess(clock, store, worker, ids, gates, running)


def test_a_drain_finishes_running_tasks_hands_back_waiting_ones_and_writes_every_outcome() -> None:
    async def scenario() -> None:
        w = await in_process(4, concurrency=2, prefetch=2)
        store, worker, ids, gates = w.store, w.worker, w.ids, w.gates
        assert worker.ready.is_set() and worker.status().running == 2
        # Given two tasks running and two prefetched, When the worker is told to drain
        worker.request_drain()
        await settle()
        # Then the waiting ones are handed back at once, and the running ones go on
        assert [store.tasks[i].state for i in ids] == ["running", "running", "queued", "queued"]
        assert store.workers[worker.id].state == "draining"
        assert worker.status().readiness() == (False, "draining")
        # When the running ones finish within the drain timeout
        for n in (0, 1):
            gates[n].set()
        # Then their outcomes are written, the worker row is gone and the worker ends
        assert await asyncio.wait_for(w.running, 2) == 0
        assert [store.tasks[i].state for i in ids] == ["succeeded", "succeeded", "queued", "queued"]
        assert [store.outcomes_of(i) for i in ids] == [["succeeded"]] * 2 + [["released"]] * 2
        assert store.workers[worker.id].state == "gone"
        assert names(store).count("claim") + names(store).count("complete_and_claim") == 1

    run(scenario)


def test_a_drain_releases_what_still_runs_at_its_timeout() -> None:
    async def scenario() -> None:
        w = await in_process(2, concurrency=2, drain_timeout=timedelta(seconds=30))
        store, ids = w.store, w.ids
        # Given two tasks that never finish, When the worker drains
        w.worker.request_drain()
        await settle()
        await w.clock.advance(29)
        assert not w.running.done()
        # Then at the drain timeout they are released (no attempt counted) and it ends
        await w.clock.advance(1)
        assert await asyncio.wait_for(w.running, 2) == 0
        assert [store.tasks[i].state for i in ids] == ["queued", "queued"]
        assert [store.outcomes_of(i) for i in ids] == [["released"], ["released"]]
        assert all(store.tasks[i].errors == store.tasks[i].crashes == 0 for i in ids)

    run(scenario)


def test_an_operator_reaches_a_worker_through_its_row_and_its_channel() -> None:
    async def scenario() -> None:
        w = await in_process(2, concurrency=2)
        store, worker, ids = w.store, w.worker, w.ids
        # Given two running tasks, When an operator cancels one (a flag and a NOTIFY)
        store.operator_cancel(ids[0])
        await settle()
        # Then the worker reads the flag, stops that task and records it cancelled
        assert store.tasks[ids[0]].state == "cancelled"
        assert store.outcomes_of(ids[0]) == ["cancelled"]
        # When an operator asks the worker to drain, Then its next heartbeat hears it
        store.workers[worker.id].drain_requested = True
        await w.clock.advance(LEASE.total_seconds() / 3)
        assert worker.status().draining
        w.gates[1].set()
        assert await asyncio.wait_for(w.running, 2) == 0
        assert store.tasks[ids[1]].state == "succeeded"

    run(scenario)


def test_a_run_of_failures_is_logged_first_then_once_a_minute_then_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        streak = Streak("heartbeat", clock)
        # Given a loop failing every second for 90 s (a database away that long)
        for _ in range(90):
            streak.failed("error=connection refused")
            await clock.advance(1)
        # Then it said so at once and a minute later, not ninety times
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in warned] == [
            "heartbeat_failed error=connection refused",
            "heartbeat_failed error=connection refused failures=61 for=60s",
        ]
        # When a pass succeeds, the end of the run is one line; a second success says nothing
        streak.ok()
        streak.ok()
        ended = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
        assert ended == ["heartbeat_recovered failures=90 after=90.0s"]
        # And the next failure is the first of a new run
        streak.failed("error=again")
        assert caplog.records[-1].levelno == logging.WARNING

    with caplog.at_level(logging.DEBUG, logger="tenure._worker.service"):
        run(scenario)
