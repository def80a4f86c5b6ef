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
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pydantic_core

from tenure._worker.completer import Outcome
from tenure._worker.processes import ChildDied, Job, ProcessPool
from tenure._worker.state import Claimed
from tenure._worker.threads import DaemonThreadPool
from tenure.context import TaskContext, _current, bind
from tenure.errors import Discard, PayloadInvalid, RetryAfter
from tenure.limits import not_json
from tenure.registry import Task

log = logging.getLogger(__name__)


def _result_outcome(task: Task[Any, Any], claimed: Claimed, encoded: bytes) -> Outcome:
    """The outcome of an attempt that returned ``encoded`` (JSON): succeeded, or
    failed at once when the result cannot be stored."""
    why = task.registry.limits.check_result(encoded)
    if why is not None:
        return _refused(claimed, why)
    text = encoded.decode("utf-8", "backslashreplace")
    if not_json(text):
        return Outcome(
            claimed.id,
            claimed.attempt,
            "error",
            error="result is not JSON: it holds NaN or an infinity; return null or a string",
            delay=_retry_delay(task, claimed),
        )
    return Outcome(claimed.id, claimed.attempt, "succeeded", result=_json_text(text))


def _json_text(encoded: str) -> str:
    """JSON text PostgreSQL's jsonb accepts: it refuses the NUL escape."""
    if "\\u0000" not in encoded:
        return encoded
    return _NUL_ESCAPE.sub(lambda m: m.group(1) + "\\ufffd", encoded)


_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


async def execute(
    task: Task[Any, Any],
    claimed: Claimed,
    ctx: TaskContext,
    pool: DaemonThreadPool,
    on_thread: Callable[[Future[Any]], None] | None = None,
    processes: ProcessPool | None = None,
) -> Outcome:
    """Run one attempt to its end and return its outcome (never raises). Await it
    in an asyncio task of its own: an async task's context is set in the caller's.

    ``on_thread`` receives the pool job of a sync task, so the worker can let the
    pool replace its thread if the attempt is given up while the function runs.
    Tasks with ``isolation="process"`` run in ``processes``.
    """
    tid, attempt = claimed.id, claimed.attempt
    limits = task.registry.limits
    timeout = task.options.timeout.total_seconds() if task.options.timeout else None
    if task.options.isolation == "process" and processes is not None:
        return await _in_process(task, claimed, processes, timeout)
    try:
        payload = task.decode(claimed.payload)
    except Exception as exc:  # PayloadInvalid, or a validator that raised something else
        message = limits.error_text(
            str(exc)
            if isinstance(exc, PayloadInvalid)
            else (f"{task.name}: payload invalid: {type(exc).__name__}: {exc}")
        )
        log.error("task_payload_invalid task=%s attempt=%s error=%s", tid, attempt, message)
        return Outcome(tid, attempt, "discarded", error=message)
    try:
        if task.is_async:
            # The caller runs each attempt in an asyncio task of its own, so the
            # attempt's context is set here and the function is awaited in place.
            _current.set(ctx)
            if timeout is None:
                result = await task.fn(payload)
            else:
                async with asyncio.timeout(timeout):
                    result = await task.fn(payload)
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
    except TimeoutError as exc:
        if timeout is None:  # the function's own TimeoutError: an error like any other
            return Outcome(
                tid,
                attempt,
                "error",
                error=limits.exception_text(exc),
                delay=_retry_delay(task, claimed),
            )
        ctx.mark_stop()
        return _timed_out(claimed, timeout, _retry_delay(task, claimed))
    except RetryAfter as exc:
        reason = limits.error_text(str(exc.reason))
        return Outcome(tid, attempt, "error", error=reason, delay=exc.delay.total_seconds())
    except Discard as exc:
        return Outcome(tid, attempt, "discarded", error=limits.error_text(str(exc.reason)))
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return Outcome(
            tid,
            attempt,
            "error",
            error=limits.exception_text(exc),
            delay=_retry_delay(task, claimed),
        )
    if result is None:  # most tasks return nothing
        return Outcome(tid, attempt, "succeeded", result="null")
    too_large = limits.precheck_result(result)
    if too_large is not None:
        return _refused(claimed, too_large)
    try:
        encoded = pydantic_core.to_json(result)
    except Exception as exc:  # not JSON, or a serializer of the user's that raised
        return Outcome(
            tid,
            attempt,
            "error",
            error=limits.error_text(f"result is not JSON: {_describe(exc)}"),
            delay=_retry_delay(task, claimed),
        )
    return _result_outcome(task, claimed, encoded)


def _refused(claimed: Claimed, why: str) -> Outcome:
    """A result that cannot be stored fails the task at once: the same code would
    return the same value."""
    log.error("task_result_refused task=%s attempt=%s: %s", claimed.id, claimed.attempt, why)
    return Outcome(claimed.id, claimed.attempt, "discarded", error=why)


def _describe(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return type(exc).__qualname__


def _retry_delay(task: Task[Any, Any], claimed: Claimed) -> float:
    """Seconds before the retry of an attempt that ends in error (asked only then)."""
    return task.options.backoff.delay(claimed.errors + 1).total_seconds()


def _timed_out(claimed: Claimed, timeout: float | None, retry_delay: float) -> Outcome:
    log.warning("task_timed_out task=%s attempt=%s after=%ss", claimed.id, claimed.attempt, timeout)
    return Outcome(
        claimed.id,
        claimed.attempt,
        "timed_out",
        error=f"timed out after {timeout:g}s",
        delay=retry_delay,
    )


async def _in_process(
    task: Task[Any, Any],
    claimed: Claimed,
    processes: ProcessPool,
    timeout: float | None,
) -> Outcome:
    """Run one attempt in a task process; a timeout kills the process."""
    tid, attempt = claimed.id, claimed.attempt
    job = Job(
        module=task.fn.__module__,
        qualname=task.fn.__qualname__,
        payload=claimed.payload,
        task_id=tid,
        attempt=attempt,
        task_name=task.name,
        queue=claimed.queue,
    )
    try:
        reply = await processes.run(job, timeout)
    except TimeoutError:
        return _timed_out(claimed, timeout, _retry_delay(task, claimed))
    except ChildDied as exc:
        return Outcome(tid, attempt, "error", error=str(exc), delay=_retry_delay(task, claimed))
    if reply.kind == "ok":
        return _result_outcome(task, claimed, reply.text.encode("utf-8", "backslashreplace"))
    text = task.registry.limits.error_text(reply.text)
    if reply.kind == "refused":  # the process found its result too large to send
        return _refused(claimed, text)
    if reply.kind in ("invalid", "discard"):
        return Outcome(tid, attempt, "discarded", error=text)
    if reply.kind == "retry_after":
        return Outcome(tid, attempt, "error", error=text, delay=reply.delay)
    return Outcome(tid, attempt, "error", error=text, delay=_retry_delay(task, claimed))
