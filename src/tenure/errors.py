"""The error tree.

Everything tenure raises on purpose derives from :class:`TenureError`. Outcomes a
task signals on purpose (retry later, discard) are a separate family under
:class:`TaskSignal`: they are not errors of tenure, they are instructions from the
task to the worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta


class TenureError(Exception):
    """Base class of every error tenure raises."""


class ConfigError(TenureError, ValueError):
    """A setting is missing or out of range; the message names the field."""


class DatabaseError(TenureError):
    """The database could not be reached or refused a statement.

    The driver's own exception is kept as ``__cause__``.
    """


class SchemaNotReady(DatabaseError):
    """A command that must not change the schema found it missing, older than this
    code, or unreadable by this role; the message says what to do."""


class SchemaTooNew(SchemaNotReady):
    """A newer release migrated the schema past what this release runs on; the message
    names both releases."""


class EmbeddedServerError(DatabaseError, RuntimeError):
    """The embedded PostgreSQL server could not be prepared, started or stopped.

    A :class:`DatabaseError` (the database cannot be reached), so every command reports
    it in one line; waiting does not mend it, so a worker does not retry it."""


class EmbeddedServerInUse(EmbeddedServerError):
    """``stop(force=False)`` left the embedded server running: live processes use it."""

    def __init__(self, pid: int, owners: Sequence[int]) -> None:
        self.pid = pid
        self.owners = list(owners)
        users = "1 process" if len(self.owners) == 1 else f"{len(self.owners)} processes"
        super().__init__(
            f"the embedded PostgreSQL (pid {pid}) is in use by {users} "
            f"({', '.join(map(str, self.owners))}); stop them first"
        )


class TaskNotFound(TenureError, LookupError):
    """No task of that name is registered (or no task row has that id)."""


class ScheduleNotFound(TenureError, LookupError):
    """An operation named a schedule the database does not hold."""


class QueueNotFound(TenureError, LookupError):
    """An operation named a queue the database does not know; the message lists the
    known ones."""


class AlreadyRegistered(TenureError):
    """A task name was registered twice in one registry."""


class PayloadInvalid(TenureError, ValueError):
    """A payload failed validation against the task's declared payload type."""


class LeaseLost(TenureError):
    """A write about a task was fenced out: this worker no longer owns that attempt."""

    def __init__(self, task_id: int, attempt: int) -> None:
        super().__init__(f"task {task_id} attempt {attempt}: lease lost, another owner took over")
        self.task_id = task_id
        self.attempt = attempt


class TaskFailed(TenureError):
    """``handle.result()`` of a task that ended failed or quarantined."""

    def __init__(self, task_id: int, state: str, error: str | None) -> None:
        last = (error or "no error recorded").strip().splitlines()
        super().__init__(f"task {task_id} ended {state}: {last[-1] if last else ''}")
        self.task_id = task_id
        self.state = state
        self.error = error


class TaskCancelled(TaskFailed):
    """``handle.result()`` of a task that was cancelled."""


class ResultTimeout(TenureError, TimeoutError):
    """``handle.result(timeout=...)`` gave up before the task finished."""


class TaskSignal(Exception):  # noqa: N818 - these are signals, not errors
    """Base of the outcomes a task raises on purpose."""


class RetryAfter(TaskSignal):
    """Ask for another attempt after ``delay`` (counts against ``max_attempts``).

    ``slow_down`` (between 0 and 1) also lowers the rate limits the task is under, for
    its partition key where it has a rate per key, to that share of their rate for
    ``slow_for`` seconds (default 60): what a task does when the API it calls answers
    "429, slow down". Requests add up: two halvings make a quarter, never below a
    hundredth, and the later end wins.

    >>> raise RetryAfter(timedelta(seconds=30), "HTTP 429", slow_down=0.5)  # doctest: +SKIP
    """

    def __init__(
        self,
        delay: timedelta | float,
        reason: str = "retry requested",
        *,
        slow_down: float | None = None,
        slow_for: timedelta | float = 60.0,
    ) -> None:
        super().__init__(reason)
        self.delay = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)
        self.reason = reason
        if slow_down is not None and not (0 < slow_down <= 1):
            raise ConfigError(f"slow_down: must be more than 0 and at most 1, got {slow_down!r}")
        seconds = slow_for.total_seconds() if isinstance(slow_for, timedelta) else slow_for
        if not (0 < seconds <= 86400):
            raise ConfigError(
                f"slow_for: must be more than 0 s and at most a day, got {slow_for!r}"
            )
        self.slow_down = slow_down
        self.slow_for = float(seconds)


class Discard(TaskSignal):
    """End the task as ``failed`` at once, without further retries."""

    def __init__(self, reason: str = "discarded by the task") -> None:
        super().__init__(reason)
        self.reason = reason
