"""One task per way a call can end, written three times: run in a pool thread, on the
event loop, and in a task process (tests/test_endings.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tenure import Discard, Limits, PayloadInvalid, Registry, RetryAfter
from tests.apps.fleet import Picky  # a validator that raises KeyError on "boom"

reg = Registry(schema="endings", limits=Limits(result_bytes=4096, error_chars=400))


def body(case: str) -> Any:
    """What each case's function does."""
    if case == "returns":
        return {"n": 1, "text": "nul\x00inside"}
    if case == "retry_after":
        raise RetryAfter(timedelta(seconds=7), "the remote side said: busy")
    if case == "discard":
        raise Discard("not worth another try")
    if case == "raises":
        raise ValueError("the parser choked")
    if case == "inner_invalid":  # e.g. a send() of a bad payload from inside the task
        raise PayloadInvalid("other.task: payload invalid: field 'x' missing")
    if case == "nan":
        return {"ratio": float("nan")}
    if case == "object":
        return object()
    if case == "huge":
        return "x" * (reg.limits.result_bytes + 1)
    if case == "long_error":
        raise ValueError("y" * 5000)
    raise AssertionError(case)


@reg.task(name="thread")
def in_thread(payload: Picky) -> Any:
    return body(payload.value)


@reg.task(name="async")
async def on_loop(payload: Picky) -> Any:
    return body(payload.value)


@reg.task(name="process", isolation="process")
def in_process(payload: Picky) -> Any:
    return body(payload.value)


@reg.task(name="async_process", isolation="process")
async def async_in_process(payload: Picky) -> Any:
    return body(payload.value)
