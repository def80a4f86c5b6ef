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
- Outcomes are made storable (see :mod:`tenure.limits`) off the event loop: a sync
  task's in its pool thread, a large async result or an error text in a thread of
  its own, so encoding megabytes never delays the heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pydantic_core

from tenure._store.worker_rows import Claimed, Outcome
from tenure._worker.processes import ChildDied, Job, ProcessPool
from tenure._worker.threads import DaemonThreadPool
from tenure.context import TaskContext, _current, bind
from tenure.errors import Discard, PayloadInvalid, RetryAfter
from tenure.limits import Limits, not_json, size_at_least
from tenure.registry import Task

log = logging.getLogger(__name__)


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
        # DEBUG: the task_failed line says it, rate-limited (a flood of bad payloads)
        log.debug("task_payload_invalid task=%s attempt=%s error=%s", tid, attempt, message)
        return Outcome(tid, attempt, "discarded", error=message)
    if task.is_async:
        # The caller runs each attempt in an asyncio task of its own, so the attempt's
        # context is set here and the function is awaited in place.
        _current.set(ctx)
        try:
            if timeout is None:
                value = await task.fn(payload)
            else:
                async with asyncio.timeout(timeout):
                    value = await task.fn(payload)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if isinstance(exc, TimeoutError) and timeout is not None:
                ran = Ran(exc=exc)
            else:  # a long message is formatted off the loop
                ran = Ran(exc=exc, text=await asyncio.to_thread(limits.exception_text, exc))
        else:
            # A large result is encoded off the loop, so heartbeats keep their time.
            small = size_at_least(value, OFF_LOOP_BYTES) <= OFF_LOOP_BYTES
            ran = (
                prepare(value, limits) if small else await asyncio.to_thread(prepare, value, limits)
            )
    else:
        job = pool.submit(bind(ctx).run, run_and_prepare, task.fn, payload, limits)
        if on_thread is not None:
            on_thread(job)
        future = asyncio.wrap_future(job)
        try:
            ran = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError as exc:
            pool.abandon(job)
            ran = Ran(exc=exc)
    return _outcome(task, claimed, ctx, ran, timeout)


@dataclass(frozen=True)
class Ran:
    """How a function call ended, made ready to store where it ran: the exception
    with its text, or the result as the JSON text stored (or why it cannot be)."""

    exc: BaseException | None = None
    text: str = ""
    result: str | None = None
    refused: str | None = None  # the result cannot be stored: why
    invalid: str | None = None  # the result is not JSON: why


OFF_LOOP_BYTES = 64 * 1024
NOT_JSON = "result is not JSON: it holds NaN or an infinity; return null or a string"


def run_and_prepare(fn: Callable[[Any], Any], payload: Any, limits: Limits) -> Ran:
    """Call ``fn`` in a pool thread and prepare its outcome there, off the loop."""
    try:
        value = fn(payload)
    except BaseException as exc:
        return Ran(exc=exc, text=limits.exception_text(exc))
    return prepare(value, limits)


def prepare(value: Any, limits: Limits) -> Ran:
    """A result encoded as it will be stored, or why it cannot be."""
    if value is None:  # most tasks return nothing
        return Ran(result="null")
    why = limits.precheck_result(value)  # told from its strings, before encoding
    if why is not None:
        return Ran(refused=why)
    try:
        encoded = pydantic_core.to_json(value)
    except Exception as exc:  # not JSON, or a serializer of the user's that raised
        return Ran(invalid=limits.error_text(f"result is not JSON: {_describe(exc)}"))
    why = limits.check_result(encoded)
    if why is not None:
        return Ran(refused=why)
    return _json_result(encoded.decode("utf-8", "backslashreplace"))


def _json_result(text: str) -> Ran:
    """A result's JSON text as it is stored, or why it cannot be (NaN, infinity)."""
    if not_json(text):
        return Ran(invalid=NOT_JSON)
    return Ran(result=_json_text(text))


def _outcome(
    task: Task[Any, Any],
    claimed: Claimed,
    ctx: TaskContext | None,
    ran: Ran,
    timeout: float | None,
) -> Outcome:
    tid, attempt = claimed.id, claimed.attempt
    limits = task.registry.limits
    exc = ran.exc
    if exc is None:
        if ran.refused is not None:
            return _refused(claimed, ran.refused)
        if ran.invalid is not None:
            return Outcome(
                tid, attempt, "error", error=ran.invalid, delay=_retry_delay(task, claimed)
            )
        assert ran.result is not None
        return Outcome(tid, attempt, "succeeded", result=ran.result)
    if isinstance(exc, TimeoutError) and timeout is not None and not ran.text:
        if ctx is not None:
            ctx.mark_stop()
        return _timed_out(claimed, timeout, _retry_delay(task, claimed))
    if isinstance(exc, RetryAfter):
        reason = limits.error_text(str(exc.reason))
        return Outcome(tid, attempt, "error", error=reason, delay=exc.delay.total_seconds())
    if isinstance(exc, Discard):
        return Outcome(tid, attempt, "discarded", error=limits.error_text(str(exc.reason)))
    return Outcome(
        tid,
        attempt,
        "error",
        error=ran.text or limits.exception_text(exc),
        delay=_retry_delay(task, claimed),
    )


def _refused(claimed: Claimed, why: str) -> Outcome:
    """A result that cannot be stored fails the task at once: the same code would
    return the same value."""
    # DEBUG: the task_failed line says it, rate-limited
    log.debug("task_result_refused task=%s attempt=%s: %s", claimed.id, claimed.attempt, why)
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
    # DEBUG: the task_retried or task_failed line says it, rate-limited
    log.debug("task_timed_out task=%s attempt=%s after=%ss", claimed.id, claimed.attempt, timeout)
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
        return _outcome(task, claimed, None, _json_result(reply.text), timeout)
    text = task.registry.limits.error_text(reply.text)
    if reply.kind == "refused":  # the process found its result too large to send
        return _refused(claimed, text)
    if reply.kind in ("invalid", "discard"):
        return Outcome(tid, attempt, "discarded", error=text)
    if reply.kind == "retry_after":
        return Outcome(tid, attempt, "error", error=text, delay=reply.delay)
    return Outcome(tid, attempt, "error", error=text, delay=_retry_delay(task, claimed))
