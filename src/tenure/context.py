"""``tenure.current()``: what a running task knows about its own attempt."""

from __future__ import annotations

import contextvars
import threading
from datetime import datetime

from tenure.errors import TenureError


class TaskContext:
    """The attempt a task function is running as.

    ``lease_lost`` is set when this worker learns it no longer owns the task (a
    takeover happened or the worker cut itself off); ``cancelled`` when an operator
    cancelled it; ``stop`` is set in both cases, and also on timeout or when a
    draining worker hands the task back. Long tasks should check ``stop`` between
    steps and return early. Each is a :class:`threading.Event`, made the first time
    it is asked for (most tasks never ask), already set if its moment has passed.

    A task a schedule sent knows which (``schedule``, its name) and the tick it was
    sent for (``tick``, a timezone-aware datetime in UTC; ``tick.astimezone(zone)``
    gives it on the schedule's clock), so a backfill knows which period it covers.
    Both are None for a task sent otherwise.
    """

    __slots__ = ("id", "attempt", "task_name", "queue", "schedule", "tick", "_events", "_marked")

    def __init__(
        self,
        id: int,
        attempt: int,
        task_name: str,
        queue: str,
        schedule: str | None = None,
        tick: datetime | None = None,
    ) -> None:
        self.id = id
        self.attempt = attempt
        self.task_name = task_name
        self.queue = queue
        self.schedule = schedule
        self.tick = tick
        self._events: dict[str, threading.Event] | None = None
        self._marked: set[str] | None = None

    def __repr__(self) -> str:
        return (
            f"TaskContext(id={self.id}, attempt={self.attempt}, "
            f"task_name={self.task_name!r}, queue={self.queue!r})"
        )

    def _event(self, name: str) -> threading.Event:
        events = self._events
        if events is not None and name in events:
            return events[name]
        with _events_lock:
            if self._events is None:
                self._events = {}
            event = self._events.get(name)
            if event is None:
                event = self._events[name] = threading.Event()
                if self._marked is not None and name in self._marked:
                    event.set()
            return event

    def _mark(self, *names: str) -> None:
        with _events_lock:
            if self._marked is None:
                self._marked = set()
            self._marked.update(names)
            for name in names:
                if self._events is not None and name in self._events:
                    self._events[name].set()

    @property
    def lease_lost(self) -> threading.Event:
        """Set when another owner holds this task now: stop, nothing more is recorded."""
        return self._event("lease_lost")

    @property
    def cancelled(self) -> threading.Event:
        """Set when an operator cancelled the task."""
        return self._event("cancelled")

    @property
    def stop(self) -> threading.Event:
        """Set when the attempt should end early, for whatever reason."""
        return self._event("stop")

    def mark_lost(self) -> None:
        self._mark("lease_lost", "stop")

    def mark_cancelled(self) -> None:
        self._mark("cancelled", "stop")

    def mark_stop(self) -> None:
        self._mark("stop")


_events_lock = threading.Lock()


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
