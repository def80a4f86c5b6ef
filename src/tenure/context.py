"""``tenure.current()``: what a running task knows about its own attempt."""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field

from tenure.errors import TenureError


@dataclass
class TaskContext:
    """The attempt a task function is running as.

    ``lease_lost`` is set when this worker learns it no longer owns the task (a
    takeover happened or the worker cut itself off); ``cancelled`` when an operator
    cancelled it; ``stop`` is set in both cases, and also on timeout or when a
    draining worker hands the task back. Long tasks should check ``stop`` between
    steps and return early.
    """

    id: int
    attempt: int
    task_name: str
    queue: str
    lease_lost: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def mark_lost(self) -> None:
        self.lease_lost.set()
        self.stop.set()

    def mark_cancelled(self) -> None:
        self.cancelled.set()
        self.stop.set()


_current: contextvars.ContextVar[TaskContext] = contextvars.ContextVar("tenure_current")


def current() -> TaskContext:
    """The running task's context; raises :class:`TenureError` outside a task.

    >>> def parse(payload: dict) -> None:
    ...     ctx = tenure.current()
    ...     for page in pages(payload):
    ...         if ctx.stop.is_set():
    ...             return
    """
    try:
        return _current.get()
    except LookupError:
        raise TenureError("tenure.current() called outside a running task") from None


def bind(ctx: TaskContext) -> contextvars.Context:
    """A copy of the caller's context with ``ctx`` as the current task."""
    copied = contextvars.copy_context()
    copied.run(_current.set, ctx)
    return copied
