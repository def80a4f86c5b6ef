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
import re
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pydantic_core

from tenure._worker.completer import Outcome
from tenure._worker.state import Claimed
from tenure._worker.threads import DaemonThreadPool
from tenure.context import TaskContext, bind
from tenure.errors import Discard, PayloadInvalid, RetryAfter
from tenure.registry import Task

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 8000


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).strip().replace("\x00", "\\0")
    if len(text) > MAX_ERROR_CHARS:
        text = "…" + text[-MAX_ERROR_CHARS:]
    return text


def _json_text(encoded: str) -> str:
    """JSON text PostgreSQL's jsonb accepts: it refuses the NUL escape."""
    return _NUL_ESCAPE.sub(lambda m: m.group(1) + "\\ufffd", encoded)


_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


async def execute(
    task: Task[Any, Any],
    claimed: Claimed,
    ctx: TaskContext,
    pool: DaemonThreadPool,
    on_thread: Callable[[Future[Any]], None] | None = None,
) -> Outcome:
    """Run one attempt to its end and return its outcome (never raises).

    ``on_thread`` receives the pool job of a sync task, so the worker can let the
    pool replace its thread if the attempt is given up while the function runs.
    """
    tid, attempt = claimed.id, claimed.attempt
    try:
        payload = task.validate(claimed.payload)
    except Exception as exc:  # PayloadInvalid, or a validator that raised something else
        message = (
            str(exc)
            if isinstance(exc, PayloadInvalid)
            else (f"{task.name}: payload invalid: {type(exc).__name__}: {exc}")
        )
        log.error("task_payload_invalid task=%s attempt=%s error=%s", tid, attempt, message)
        return Outcome(tid, attempt, "discarded", error=message)
    timeout = task.options.timeout.total_seconds() if task.options.timeout else None
    try:
        if task.is_async:
            coro = task.fn(payload)
            runner = asyncio.create_task(coro, context=bind(ctx))
            result = await asyncio.wait_for(runner, timeout)
        else:
            job = pool.submit(bind(ctx).run, task.fn, payload)
            if on_thread is not None:
                on_thread(job)
            future = asyncio.wrap_future(job)
            try:
                result = await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                pool.abandon(job)
                raise
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
        reason = exc.reason.replace("\x00", "\\0")
        return Outcome(tid, attempt, "error", error=reason, delay=exc.delay.total_seconds())
    except Discard as exc:
        return Outcome(tid, attempt, "discarded", error=exc.reason.replace("\x00", "\\0"))
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
    return Outcome(tid, attempt, "succeeded", result=_json_text(encoded))
