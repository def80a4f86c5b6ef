"""The words tenure uses for where a task stands, written once.

Rules:
- A task's state is one of :class:`TaskState`; the SQL functions write the same
  words (``schema.sql`` checks them). Compare with the enum or its string: a
  ``TaskState`` is a ``str``.
- Which states may be retried, cancelled or count as finished is decided here and
  nowhere else in Python; ``retry_task()`` in SQL retries exactly
  :data:`RETRYABLE_STATES` (a test holds the two together).
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    """Where a task stands: waiting (scheduled, queued), running, or finished."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    QUARANTINED = "quarantined"


TASK_STATES: tuple[str, ...] = tuple(s.value for s in TaskState)
"""Every state as plain text, in the order a task passes through them (choices, filters)."""

FINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.QUARANTINED}
)
"""A task in one of these has ended: its outcome is recorded and it runs no more."""

_RETRYABLE = (TaskState.FAILED, TaskState.QUARANTINED, TaskState.CANCELLED)
RETRYABLE_STATES = frozenset(_RETRYABLE)
"""What an operator may queue again (``tenure tasks retry``, the dashboard's Retry)."""

RETRYABLE_NAMES = ", ".join(_RETRYABLE[:-1]) + " or " + _RETRYABLE[-1]
"""The retryable states as a sentence says them: ``failed, quarantined or cancelled``."""

CANCELLABLE_STATES = frozenset({TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING})
"""What an operator may cancel: every task that has not ended."""
