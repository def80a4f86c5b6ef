"""One mapping from how a call ended to the attempt's outcome, whatever runs the task:
a pool thread, the event loop or a task process (real processes, no database)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tenure._store.worker_rows import Claimed, Outcome
from tenure._worker.ending import NOT_JSON
from tenure._worker.executor import execute
from tenure._worker.processes import ProcessPool
from tenure._worker.threads import DaemonThreadPool
from tenure.context import TaskContext
from tests.apps import endings

RUNNERS = ("thread", "async", "process", "async_process")


@pytest.fixture(scope="module")
def run() -> Iterator[Any]:
    pool = DaemonThreadPool(2)
    loop = asyncio.new_event_loop()
    processes = ProcessPool(1)

    def run_one(runner: str, value: str) -> Outcome:
        task = endings.reg.tasks[runner]
        row = Claimed(1, task.name, "default", f'{{"value": "{value}"}}', 1, 0, 0)
        ctx = TaskContext(1, 1, task.name, "default")

        async def go() -> Outcome:  # in a task of its own, as the worker runs it
            return await asyncio.create_task(execute(task, row, ctx, pool, None, processes))

        return loop.run_until_complete(go())

    yield run_one
    processes.close()
    loop.close()
    pool.shutdown(wait=False)


def same_everywhere(run: Any, value: str) -> Outcome:
    """The outcome of ``value``'s case, asserted equal in every runner."""
    outcomes = {runner: run(runner, value) for runner in RUNNERS}
    first = outcomes["thread"]
    for runner, outcome in outcomes.items():
        assert (outcome.outcome, outcome.result) == (first.outcome, first.result), runner
        assert (outcome.delay > 0) == (first.delay > 0), runner  # the backoff is jittered
        last = (outcome.error or "").replace(runner, "NAME").splitlines()[-1:]
        assert last == (first.error or "").replace("thread", "NAME").splitlines()[-1:], runner
    return first


@pytest.mark.parametrize(
    ("case", "outcome", "error"),
    [
        ("returns", "succeeded", None),
        ("retry_after", "error", "the remote side said: busy"),
        ("discard", "discarded", "not worth another try"),
        ("raises", "error", "ValueError: the parser choked"),
        # A PayloadInvalid raised by the task's own code is its error, retried; only
        # the worker's validation of the payload fails the task at once.
        ("inner_invalid", "error", "PayloadInvalid: other.task: payload invalid"),
        ("nan", "error", NOT_JSON),
        ("object", "error", "result is not JSON: "),
        ("huge", "discarded", "result too large: "),
        ("long_error", "error", "yyyy"),  # the tail of a long text is kept
    ],
)
def test_an_ending_is_the_same_outcome_in_a_thread_on_the_loop_and_in_a_process(
    run: Any, case: str, outcome: str, error: str | None
) -> None:
    got = same_everywhere(run, case)
    assert got.outcome == outcome
    if error is None:
        assert got.error is None and got.result == '{"n":1,"text":"nul\\ufffdinside"}'
    else:
        assert got.error is not None and error in got.error
        assert len(got.error) <= endings.reg.limits.error_chars
    if case == "retry_after":
        assert got.delay == 7.0
    elif outcome == "error":
        assert got.delay > 0  # the task's backoff


def test_a_validator_that_raises_the_unexpected_fails_the_task_at_once_everywhere(
    run: Any,
) -> None:
    got = same_everywhere(run, "boom")
    assert got.outcome == "discarded"
    assert got.error is not None
    assert got.error.startswith("thread: payload invalid: KeyError: 'a validator that raises")
