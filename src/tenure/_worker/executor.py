"""Executor: runs one claimed attempt and turns its end into an outcome.

Rules:
- The payload is validated against the task's type before the function runs; a
  payload that can never validate fails the task at once (no retries).
- ``async def`` tasks run on the event loop, plain ones in the worker's thread pool;
  either way ``tenure.current()`` gives the attempt's context.
- A ``timeout`` ends the attempt as ``timed_out`` (retried like an error): a
  coroutine is cancelled; a thread is told to stop through ``current().stop`` and
  abandoned (threads cannot be killed).
- Errors retry after the task's backoff until ``max_attempts``; ``RetryAfter`` picks
  the delay; ``Discard`` fails the task at once.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import pydantic_core

from tenure._worker.completer import Outcome
from tenure._worker.state import Claimed
from tenure.context import TaskContext, bind
from tenure.errors import Discard, PayloadInvalid, RetryAfter
from tenure.registry import Task

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 8000


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).strip()
    if len(text) > MAX_ERROR_CHARS:
        text = "…" + text[-MAX_ERROR_CHARS:]
    return text


async def execute(
    task: Task[Any, Any], claimed: Claimed, ctx: TaskContext, pool: Executor
) -> Outcome:
    """Run one attempt to its end and return its outcome (never raises)."""
    tid, attempt = claimed.id, claimed.attempt
    try:
        payload = task.validate(claimed.payload)
    except PayloadInvalid as exc:
        log.error("task_payload_invalid task=%s attempt=%s error=%s", tid, attempt, exc)
        return Outcome(tid, attempt, "discarded", error=str(exc))
    timeout = task.options.timeout.total_seconds() if task.options.timeout else None
    try:
        if task.is_async:
            coro = task.fn(payload)
            runner = asyncio.create_task(coro, context=bind(ctx))
            result = await asyncio.wait_for(runner, timeout)
        else:
            run: Callable[..., Any] = bind(ctx).run
            future = asyncio.get_running_loop().run_in_executor(pool, run, task.fn, payload)
            result = await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError:
        ctx.stop.set()
        log.warning("task_timed_out task=%s attempt=%s after=%ss", tid, attempt, timeout)
        return Outcome(
            tid,
            attempt,
            "timed_out",
            error=f"timed out after {timeout:g}s",
            delay=task.options.backoff.delay(claimed.errors + 1).total_seconds(),
        )
    except RetryAfter as exc:
        return Outcome(tid, attempt, "error", error=exc.reason, delay=exc.delay.total_seconds())
    except Discard as exc:
        return Outcome(tid, attempt, "discarded", error=exc.reason)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return Outcome(
            tid,
            attempt,
            "error",
            error=_error_text(exc),
            delay=task.options.backoff.delay(claimed.errors + 1).total_seconds(),
        )
    try:
        encoded = pydantic_core.to_json(result).decode()
    except pydantic_core.PydanticSerializationError as exc:
        return Outcome(
            tid,
            attempt,
            "error",
            error=f"result is not JSON: {exc}",
            delay=task.options.backoff.delay(claimed.errors + 1).total_seconds(),
        )
    return Outcome(tid, attempt, "succeeded", result=encoded)
