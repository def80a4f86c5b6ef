"""Process isolation: tasks declared ``isolation="process"`` run in child processes.

Rules:
- A small pool of child processes (at most the worker's process slots), started on
  demand with the ``spawn`` method and reused task after task.
- A child runs one task at a time: it imports the task's module, validates the
  payload, runs the function (``async def`` too) with ``tenure.current()`` set, and
  sends back the JSON result or the error.
- A timeout or a cancellation kills the child (SIGKILL): C code stuck in a loop
  stops at once. A child that dies mid-task ends the attempt as an error. Killed
  or dead children are replaced on demand.
- With a memory limit, a child whose resident memory grew past it after a task is
  retired and replaced (parsers leak).
- A child ends with its worker, however the worker ends (SIGKILL included), long
  before the worker's leases expire, so no attempt runs on after its lease: the
  child gets SIGKILL when the worker dies (Linux parent-death signal; children are
  started from the event loop's thread, which outlives them), exits at once if the
  worker was gone before that was set up, and watches a pipe only the worker holds
  open where there is no such signal. ``spawn`` makes the worker itself the
  child's parent (a forkserver would be the parent instead). A child that finds
  the worker gone when it answers exits quietly.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from tenure._worker.ending import Ending
from tenure._worker.lineage import die_with_parent, exit_at_eof

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Job:
    """What a child needs to run one attempt (all picklable)."""

    module: str
    qualname: str
    payload: str  # JSON text, as stored
    task_id: int
    attempt: int
    task_name: str
    queue: str
    schedule: str | None = None
    schedule_tick: datetime | None = None


@dataclass(frozen=True)
class Reply:
    """A child's answer: :data:`STARTED`, then how the call ended, with the child's
    resident memory."""

    ended: Ending | None
    rss: int = 0


# Sent when a job's function is found (its module imported): a process started for
# the job, or one importing a heavy module, does not spend the job's timeout on that.
STARTED = Reply(None)
# How long a task process may take to start a job (spawn, imports) before it is
# counted as dead.
START_TIMEOUT = 120.0


class ChildDied(Exception):  # noqa: N818 - an event, raised to the executor
    def __init__(self, exitcode: int | None, why: str | None = None) -> None:
        super().__init__(why or f"the task's process died (exit code {exitcode})")
        self.exitcode = exitcode


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _child_main(conn: Connection, lifeline: Connection, worker: int) -> None:
    """Loop of a task process: one job in, one reply out; it ends with ``worker``."""
    die_with_parent(worker, signal.SIGKILL)
    exit_at_eof(lifeline)
    from tenure._worker import ending
    from tenure.context import TaskContext, _current
    from tenure.limits import DEFAULT as limits

    while True:
        try:
            job: Job | None = conn.recv()
        except (EOFError, OSError):  # the worker is gone
            return
        if job is None:
            return
        try:
            obj: Any = importlib.import_module(job.module)
            for part in job.qualname.split("."):
                obj = getattr(obj, part)
        except BaseException as exc:
            ended = ending.raised(exc, limits)
        else:
            conn.send(STARTED)  # the task's own time starts now (its timeout with it)
            _current.set(
                TaskContext(
                    job.task_id,
                    job.attempt,
                    job.task_name,
                    job.queue,
                    job.schedule,
                    job.schedule_tick,
                )
            )
            ended = ending.call(obj, job.payload, obj.registry.limits)
        try:
            conn.send(Reply(ended, _resident_bytes()))
        except OSError:  # the worker is gone: nobody to tell, nothing to report
            return


class _Child:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # the worker is the parent
        self.conn, child_conn = ctx.Pipe()
        lifeline, self._lifeline = ctx.Pipe(duplex=False)  # only this end stays here
        self.proc: BaseProcess = ctx.Process(
            target=_child_main,
            args=(child_conn, lifeline, os.getpid()),
            name="tenure-task-process",
            daemon=True,
        )
        self.proc.start()
        child_conn.close()
        lifeline.close()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()
        self._lifeline.close()


class ProcessPool:
    """Up to ``size`` reusable task processes."""

    def __init__(self, size: int, max_memory: int | None = None) -> None:
        self.size = size
        self.max_memory = max_memory
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._free = asyncio.Semaphore(size)
        self.started = 0
        self.recycled = 0

    def _take(self) -> _Child:
        while self._idle:
            child = self._idle.pop()
            if child.proc.is_alive():
                return child
            child.kill()
        self.started += 1
        return _Child()

    async def run(self, job: Job, timeout: float | None) -> Ending:
        """Run ``job`` in a child; raises TimeoutError or ChildDied. A timeout, or the
        awaiting coroutine being cancelled, kills the child."""
        async with self._free:
            child = self._take()
            self._busy.add(child)
            healthy = False
            try:
                child.conn.send(job)
                try:
                    reply: Reply = await asyncio.wait_for(
                        asyncio.to_thread(self._recv, child), START_TIMEOUT
                    )
                except TimeoutError:
                    raise ChildDied(
                        None, f"the task's process did not start it within {START_TIMEOUT:g}s"
                    ) from None
                if reply.ended is None:  # started; else it failed before it could start
                    reply = await asyncio.wait_for(asyncio.to_thread(self._recv, child), timeout)
                healthy = True
            except TimeoutError:
                raise
            except (EOFError, OSError) as exc:
                raise ChildDied(child.proc.exitcode) from exc
            finally:
                self._busy.discard(child)
                if not healthy:
                    child.kill()
            if self.max_memory is not None and reply.rss > self.max_memory:
                self.recycled += 1
                log.info(
                    "task_process_recycled pid=%s rss=%d limit=%d",
                    child.proc.pid,
                    reply.rss,
                    self.max_memory,
                )
                child.kill()
            else:
                self._idle.append(child)
            if reply.ended is None:
                raise ChildDied(None, "the task's process said it started twice")
            return reply.ended

    @staticmethod
    def _recv(child: _Child) -> Reply:
        reply: Reply = child.conn.recv()
        return reply

    def close(self) -> None:
        for child in [*self._idle, *self._busy]:
            try:
                child.conn.send(None)
            except OSError:
                pass
            child.kill()
        self._idle.clear()
        self._busy.clear()
