"""A worker's task lines at the default level, and its task processes sized to the machine.

At INFO a worker writes one line per failed attempt with its reason (rate-limited
under a flood) and a periodic ``tasks_summary``, never a line per success; at DEBUG
one line per claim and per outcome. Process-isolated tasks run in no more task
processes than the cores allow unless asked for more.
"""

from __future__ import annotations

import logging
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import psycopg
import pytest

from tenure._store.worker_rows import Outcome
from tenure._worker.config import available_cores
from tenure._worker.status import WorkerStatus
from tenure._worker.tasklog import FAILURE_BURST, FAILURE_RATE, REASON_CHARS, TaskLog, reason
from tenure.limits import DEFAULT
from tests.conftest import WorkerProcess, eventually, load_app, tenure_cli
from tests.support.clock import FakeClock

pytestmark = pytest.mark.acceptance

APP = "tests.apps.tasklog:reg"


@pytest.fixture
def app(schema: str, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Any]:
    module = load_app("tests.apps.tasklog", schema, database_url, monkeypatch)
    yield module
    module.reg.client.close()


def finished(db: psycopg.Connection[Any], n: int) -> bool:
    try:
        return db.execute("SELECT count(*) FROM finished_tasks").fetchone()[0] >= n
    except psycopg.errors.UndefinedTable:  # the worker has not migrated yet
        return False


def stop(w: WorkerProcess) -> str:
    w.signal(signal.SIGTERM)
    assert w.wait(60) == 0
    return w.log()


def lines_of(log: str, event: str) -> list[str]:
    """The lines of ``event`` (date, time, level and logger come first)."""
    return [line for line in log.splitlines() if line.split(" ")[4:5] == [event]]


def summed(log: str, field: str) -> int:
    """``field`` added up over every tasks_summary line."""
    return sum(
        int(re.search(rf" {field}=(\d+)", line).group(1))  # type: ignore[union-attr]
        for line in lines_of(log, "tasks_summary")
    )


def test_each_failed_attempt_is_one_line_with_its_reason_and_successes_are_summed(
    app: Any, db: psycopg.Connection[Any], workers: Callable[..., WorkerProcess]
) -> None:
    # Given a worker at the default level, summarising every second
    w = workers("--queues", "logs", "--log-summary", "1s", app=APP)
    # When a task fails twice then succeeds, another fails for good, and 20 succeed
    flaky = app.flaky.send({})
    hopeless = app.hopeless.send({"tag": "h1"})
    app.fine.send_many([{}] * 20)
    eventually(lambda: finished(db, 22), timeout=60, what="all tasks finished")
    # (a summary is written while the worker runs, not only when it stops)
    eventually(lambda: lines_of(w.log(), "tasks_summary"), timeout=10, what="a summary")
    log = stop(w)

    # Then each failed attempt of the flaky task is one WARNING line with its reason:
    # the exception line, the first line of the message, and the delay before the retry
    retried = [x for x in lines_of(log, "task_retried") if f" task={flaky.id} " in x]
    assert len(retried) == 2, log
    for attempt, line in enumerate(retried, start=1):
        assert " WARNING " in line
        assert f"attempt={attempt} task_name=tests.apps.tasklog.flaky queue=logs" in line
        assert f"outcome=error retry_in={0.1 * 2 ** (attempt - 1):g}s:" in line  # backoff
        assert line.endswith(f": ValueError: flaky attempt {attempt} fails"), line
    # The hopeless task: a retry, then an ERROR line for the attempt that failed it,
    # its text escaped so that it forges nothing
    mine = [x for x in log.splitlines() if f" task={hopeless.id} " in x]
    assert [" task_retried " in mine[0], " task_failed " in mine[1], len(mine)] == [1, 1, 2]
    assert " ERROR " in mine[1] and "attempt=2" in mine[1]
    assert mine[1].endswith(": RuntimeError: hopeless h1 \\x1b[2K\\x07 rewritten"), mine[1]
    assert "\x1b" not in log and "\x07" not in log
    # No line per claim or success at INFO; the summaries count them all
    assert not lines_of(log, "task_succeeded") and not lines_of(log, "task_claimed")
    assert summed(log, "succeeded") == 21
    assert summed(log, "retried") == 3
    assert summed(log, "failed") == 1
    assert summed(log, "claimed") == 25
    assert summed(log, "suppressed") == 0


def test_at_debug_every_claim_and_success_has_its_line(
    app: Any, db: psycopg.Connection[Any], workers: Callable[..., WorkerProcess]
) -> None:
    w = workers("--queues", "logs", "--log-level", "debug", app=APP)
    handles = app.fine.send_many([{}] * 3)
    eventually(lambda: finished(db, 3), timeout=60, what="all tasks finished")
    log = stop(w)
    for h in handles:
        assert len([x for x in lines_of(log, "task_claimed") if f" task={h.id} " in x]) == 1
        assert len([x for x in lines_of(log, "task_succeeded") if f" task={h.id} " in x]) == 1


def test_a_flood_of_failures_writes_a_bounded_number_of_lines(
    app: Any, db: psycopg.Connection[Any], workers: Callable[..., WorkerProcess]
) -> None:
    # Given 2,000 tasks that fail at once, for good
    n = 2000
    app.poison.send_many([{"i": i} for i in range(n)])
    # When one worker runs them all
    began = time.monotonic()
    w = workers("--queues", "logs", app=APP)
    eventually(lambda: finished(db, n), timeout=240, what="all tasks failed")
    log = stop(w)
    elapsed = time.monotonic() - began
    # Then failure lines stop at the burst plus the rate over the run
    failed = lines_of(log, "task_failed")
    assert len(failed) <= FAILURE_BURST + FAILURE_RATE * elapsed + 1, (len(failed), elapsed)
    assert len(log.splitlines()) <= len(failed) + 100
    # the first line left out says so, and the summaries count every line left out
    assert len(lines_of(log, "task_lines_suppressed")) >= 1
    assert summed(log, "suppressed") > 0
    assert len(failed) + summed(log, "suppressed") == n
    assert summed(log, "failed") == n


# -- sizing --------------------------------------------------------------------------


def task_processes(pid: int) -> dict[int, int]:
    """Live task processes under process ``pid``, by the worker process they belong to."""
    found: dict[int, int] = {}
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            if "spawn_main" in " ".join(proc.cmdline()) and proc.status() != "zombie":
                found[proc.ppid()] = found.get(proc.ppid(), 0) + 1
        except psutil.NoSuchProcess:
            pass
    return found


def run_crunches(
    app: Any, db: psycopg.Connection[Any], w: WorkerProcess, count: int, seconds: float
) -> dict[int, int]:
    """Run ``count`` process tasks on ``w``; the most task processes seen alive at once
    under each of its worker processes."""
    app.crunch.send_many([{"s": seconds}] * count)
    most: dict[int, int] = {}
    deadline = time.monotonic() + 120
    while not finished(db, count):
        assert time.monotonic() < deadline, "process tasks did not finish"
        for worker, alive in task_processes(w.pid).items():
            most[worker] = max(most.get(worker, 0), alive)
        time.sleep(0.05)
    for worker, alive in task_processes(w.pid).items():  # idle ones are kept for reuse
        most[worker] = max(most.get(worker, 0), alive)
    return most


def test_process_tasks_run_in_no_more_processes_than_the_cores(
    app: Any, db: psycopg.Connection[Any], workers: Callable[..., WorkerProcess]
) -> None:
    # Given this machine's cores and a worker with the default concurrency (8)
    cores = available_cores()
    if cores >= 8:
        pytest.skip("the cap shows only with fewer cores than the default concurrency")
    w = workers("--queues", "cpu", app=APP)
    # When twelve process tasks wait for it
    most = run_crunches(app, db, w, 12, 0.5)
    stop(w)
    # Then no more task processes than cores ever ran at once
    assert list(most) == [w.pid]
    assert 1 <= most[w.pid] <= cores, (most, cores)
    assert f"process_slots={cores} " in w.log()


def test_supervised_workers_share_the_cores(
    app: Any, db: psycopg.Connection[Any], workers: Callable[..., WorkerProcess]
) -> None:
    cores = available_cores()
    share = max(1, cores // 2)
    w = workers("--queues", "cpu", "--processes", "2", app=APP)
    most = run_crunches(app, db, w, 12, 0.5)
    stop(w)
    assert most and all(1 <= n <= share for n in most.values()), (most, share)
    assert len(lines_of(w.log(), "worker_started")) == 2
    assert all(f"process_slots={share} " in x for x in lines_of(w.log(), "worker_started"))


def test_process_slots_given_override_the_cores(
    app: Any, db: psycopg.Connection[Any], workers: Callable[..., WorkerProcess]
) -> None:
    # Given a worker told its process slots outright, more than the cores
    slots = available_cores() + 1
    w = workers(
        "--queues", "cpu", "--process-slots", str(slots), "--concurrency", str(slots), app=APP
    )
    # Then it runs that many task processes at once, and no more
    most = run_crunches(app, db, w, 2 * slots, 1.5)
    stop(w)
    assert most == {w.pid: slots}, most


def test_a_larger_concurrency_alone_keeps_processes_to_the_cores(
    app: Any, db: psycopg.Connection[Any], workers: Callable[..., WorkerProcess]
) -> None:
    # Given a worker with many slots, as for I/O-bound tasks
    cores = available_cores()
    w = workers("--queues", "cpu", "--concurrency", str(cores + 2), app=APP)
    # Then its process tasks still run in no more processes than cores
    most = run_crunches(app, db, w, 2 * cores + 4, 0.5)
    stop(w)
    assert 1 <= most[w.pid] <= cores, (most, cores)


def test_more_process_slots_than_concurrency_is_one_clear_line() -> None:
    result = tenure_cli("worker", APP, "--process-slots", "9")
    assert result.returncode == 2
    error = [x for x in result.stderr.splitlines() if "process_slots" in x]
    assert error == [
        "error: process_slots: must be between 1 and the concurrency (8), got 9; a process "
        "task also takes a concurrency slot, so raise --concurrency with it"
    ], result.stderr


# -- units ---------------------------------------------------------------------------


def traceback_of(fn: Callable[[], None]) -> str:
    try:
        fn()
    except BaseException as exc:
        return DEFAULT.exception_text(exc)
    raise AssertionError("did not raise")


def test_the_reason_is_the_line_that_says_what_was_raised() -> None:
    def chained() -> None:
        try:
            raise KeyError("first")
        except KeyError:
            raise ValueError("second\n  and an indented line") from None

    def caused() -> None:
        try:
            raise ExceptionGroup("many", [ValueError("x")])
        except ExceptionGroup as group:
            raise RuntimeError("outer") from group

    def group() -> None:
        raise ExceptionGroup("many", [ValueError("x"), TypeError("y")])

    assert reason(traceback_of(chained)) == "ValueError: second"
    assert reason(traceback_of(caused)) == "RuntimeError: outer"
    assert reason(traceback_of(group)) == "ExceptionGroup: many (2 sub-exceptions)"
    assert reason("timed out after 5s") == "timed out after 5s"
    assert reason(None) == "no reason given"
    assert len(reason("x" * 10_000)) == REASON_CHARS


def test_failure_lines_are_rate_limited_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a task log with a burst of 5 lines, then 10 a second, on a clock we move
    clock = FakeClock(0.0)
    events: Counter[str] = Counter()
    tasklog = TaskLog(
        uuid.uuid4(), 15.0, lambda: WorkerStatus(events=events), clock=clock, rate=10, burst=5
    )
    caplog.set_level(logging.INFO, logger="tenure._worker.tasklog")

    def fail(n: int) -> None:
        for i in range(n):
            events["task_failed"] += 1
            tasklog.settled("task_failed", Outcome(i, 1, "error", error="boom"), None)

    def said(event: str) -> int:
        return sum(r.getMessage().startswith(event + " ") for r in caplog.records)

    # When 20 tasks fail at once, then 20 more 0.5 s later, then 20 more a minute later
    fail(20)
    assert said("task_failed") == 5 and said("task_lines_suppressed") == 1
    clock.t += 0.5
    fail(20)
    assert said("task_failed") == 10  # 0.5 s at 10 a second
    clock.t += 60
    fail(20)
    # Then the burst went out, then the rate, then the burst again (never more)
    assert said("task_failed") == 15 and said("task_lines_suppressed") == 1
    # and the summary counts the lines left out
    summary = tasklog.summarise()
    assert summary is not None and summary.suppressed == 45 and summary.counts["failed"] == 60
    # and a quiet interval writes no summary at all
    clock.t += 15.0
    assert tasklog.summarise() is None and said("tasks_summary") == 1
