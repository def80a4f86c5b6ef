"""The store's own rules, without a database: names, and the words SQL answers in."""

from __future__ import annotations

import inspect
from importlib import resources

import pytest

from tenure._store import Store, retry_answer
from tenure._store.rows import RetryResult
from tenure.states import TaskState


def test_every_store_method_is_named_after_the_statements_it_runs() -> None:
    # (result_waiter runs the pair result_waiter_add and result_waiter_remove)
    statements = {
        f.name.removesuffix(".sql")
        for f in resources.files("tenure._db.queries").iterdir()
        if f.name.endswith(".sql")
    }
    methods = {
        name
        for name, _ in inspect.getmembers(Store, inspect.isfunction)
        if not name.startswith("_")
    }
    unnamed = {m for m in methods if m not in statements and f"{m}_add" not in statements}
    assert methods and not unnamed, unnamed


@pytest.mark.parametrize(
    ("answer", "result"),
    [
        ("queued", RetryResult(7, True, TaskState.QUEUED)),
        ("unchanged:queued", RetryResult(7, False, TaskState.QUEUED)),
        ("unchanged:succeeded", RetryResult(7, False, TaskState.SUCCEEDED)),
        ("unchanged:running", RetryResult(7, False, TaskState.RUNNING)),
        ("succeeded", RetryResult(7, False, TaskState.SUCCEEDED)),  # an earlier release's
        ("missing", None),
    ],
)
def test_retry_answers_are_read_as_what_was_done(answer: str, result: RetryResult | None) -> None:
    assert retry_answer(7, answer) == result


def test_an_answer_in_no_known_word_is_refused() -> None:
    with pytest.raises(ValueError):
        retry_answer(7, "unchanged:exploded")
