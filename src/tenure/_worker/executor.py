"""Executor: runs one claimed attempt to its end.

Rules:
- The payload is validated against the task's type before the function runs; a
  payload that can never validate fails the task at once (no retries).
- ``async def`` tasks run on the event loop, plain ones in the worker's thread pool,
  ``isolation="process"`` ones in a task process; either way ``tenure.current()``
  gives the attempt's context.
- A ``timeout`` ends the attempt as ``timed_out`` (retried like an error): a
  coroutine is cancelled; a thread is told to stop through ``current().stop`` and
  abandoned (threads cannot be killed); a task process is killed.
- How a call ended becomes an outcome in one place, :mod:`tenure._worker.ending`, the
  same for every kind of task.
- Outcomes are made storable (see :mod:`tenure.limits`) off the event loop: a sync
  task's in its pool thread, a process task's in its process, a large async result or
  an error text in a thread of its own, so encoding megabytes never delays the
  heartbeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from tenure._store.worker_rows import Claimed, Outcome
from tenure._worker import ending
from tenure._worker.ending import Ending
from tenure._worker.processes import ChildDied, Job, ProcessPool
from tenure._worker.threads import DaemonThreadPool
from tenure.context import TaskContext, _current, bind
from tenure.limits import size_at_least
from tenure.registry import Task

OFF_LOOP_BYTES = 64 * 1024


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
    timeout = task.options.timeout.total_seconds() if task.options.timeout else None
    if task.options.isolation == "process" and processes is not None:
        ended = await _in_process(task, claimed, processes, timeout)
    elif task.is_async:
        ended = await _on_loop(task, claimed, ctx, timeout)
    else:
        limits = task.registry.limits
        job = pool.submit(bind(ctx).run, ending.call, task, claimed.payload, limits)
        if on_thread is not None:
            on_thread(job)
        try:
            ended = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job)), timeout)
        except TimeoutError:
            assert timeout is not None
            pool.abandon(job)
            ctx.mark_stop()
            ended = ending.timed_out(timeout)
    return ending.outcome(task, claimed, ended)


async def _on_loop(
    task: Task[Any, Any], claimed: Claimed, ctx: TaskContext, timeout: float | None
) -> Ending:
    """An async task, awaited in place (the caller gave it an asyncio task of its own,
    so its context is set here)."""
    limits = task.registry.limits
    try:
        payload = task.decode(claimed.payload)
    except Exception as exc:
        return ending.invalid_payload(task, exc, limits)
    _current.set(ctx)
    try:
        if timeout is None:
            value = await task.fn(payload)
        else:
            async with asyncio.timeout(timeout) as within:
                value = await task.fn(payload)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if timeout is not None and isinstance(exc, TimeoutError) and within.expired():
            ctx.mark_stop()
            return ending.timed_out(timeout)
        # A long message is formatted off the loop.
        return await asyncio.to_thread(ending.raised, exc, limits)
    # A large result is encoded off the loop, so heartbeats keep their time.
    if size_at_least(value, OFF_LOOP_BYTES) <= OFF_LOOP_BYTES:
        return ending.returned(value, limits)
    return await asyncio.to_thread(ending.returned, value, limits)


async def _in_process(
    task: Task[Any, Any],
    claimed: Claimed,
    processes: ProcessPool,
    timeout: float | None,
) -> Ending:
    """Run one attempt in a task process; a timeout kills the process."""
    job = Job(
        module=task.fn.__module__,
        qualname=task.fn.__qualname__,
        payload=claimed.payload,
        task_id=claimed.id,
        attempt=claimed.attempt,
        task_name=task.name,
        queue=claimed.queue,
        schedule=claimed.schedule,
        schedule_tick=claimed.schedule_tick,
    )
    try:
        return await processes.run(job, timeout)
    except TimeoutError:
        assert timeout is not None
        return ending.timed_out(timeout)
    except ChildDied as exc:
        return Ending("died", str(exc))
