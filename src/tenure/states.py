"""The words tenure uses for where a task stands and how its attempts end, written once.

Rules:
- An attempt's end has three words on its way to the operator: what the worker
  reports (:class:`Reported`), what the database makes of it (:class:`Verdict`,
  returned by ``complete()``) and what the ``attempts`` table keeps
  (:class:`Recorded`). Each is reported as an :class:`Event`, the word of log lines,
  metric names and the dashboard's labels; the mappings between them are below and
  nowhere else (tests hold them to ``schema.sql`` and the SQL functions).
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


class Reported(StrEnum):
    """How an attempt ended, as the worker writes it to ``complete()``."""

    SUCCEEDED = "succeeded"
    ERROR = "error"  # retried after the backoff until max_attempts
    TIMED_OUT = "timed_out"  # retried like an error
    DISCARDED = "discarded"  # failed at once, no retry (recorded as an error)
    CANCELLED = "cancelled"
    RELEASED = "released"  # handed back unrun: no attempt spent


class Verdict(StrEnum):
    """What ``complete()`` made of an outcome the worker still owned."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY = "retry"
    RELEASED = "released"
    CANCELLED = "cancelled"
    #: Not from the database: an outcome whose commit's answer was lost and that the
    #: worker found recorded when it reconnected.
    RECORDED = "recorded"


class Recorded(StrEnum):
    """An attempt's outcome as the ``attempts`` table keeps it."""

    SUCCEEDED = "succeeded"
    ERROR = "error"
    LEASE_EXPIRED = "lease_expired"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    RELEASED = "released"


class Event(StrEnum):
    """What tenure reports: the first word of a log line, a metric's name, a label."""

    TASK_CLAIMED = "task_claimed"
    TASK_SUCCEEDED = "task_succeeded"
    TASK_FAILED = "task_failed"
    TASK_RETRIED = "task_retried"
    TASK_RELEASED = "task_released"
    TASK_CANCELLED = "task_cancelled"
    TASK_CANCELLING = "task_cancelling"
    TASK_TIMED_OUT = "task_timed_out"
    TASK_QUARANTINED = "task_quarantined"
    TASK_RECORDED_BEFORE_RECONNECT = "task_recorded_before_reconnect"
    TASK_UNKNOWN = "task_unknown"
    TASKS_SUMMARY = "tasks_summary"
    TASK_LINES_SUPPRESSED = "task_lines_suppressed"
    LEASE_EXPIRED = "lease_expired"
    LEASE_LOST = "lease_lost"
    WORKER_STARTED = "worker_started"
    WORKER_DRAINING = "worker_draining"
    WORKER_DRAIN_REQUESTED = "worker_drain_requested"
    WORKER_DRAINED = "worker_drained"
    WORKER_SELF_FENCED = "worker_self_fenced"
    WORKER_STOPPED = "worker_stopped"
    WORKER_GONE = "worker_gone"


#: What each event means (the README's Logs section and ``docs/operations.md`` list it).
EVENT_MEANINGS: dict[Event, str] = {
    Event.TASK_CLAIMED: "a worker took a lease on a task",
    Event.TASK_SUCCEEDED: "an attempt finished and the task succeeded",
    Event.TASK_FAILED: "an attempt failed and the task has no retries left",
    Event.TASK_RETRIED: "an attempt failed and the task waits for its next attempt",
    Event.TASK_RELEASED: "a worker handed a task back without spending an attempt",
    Event.TASK_CANCELLED: "an operator's cancel stopped the task",
    Event.TASK_CANCELLING: "a running task was told to stop after a cancel",
    Event.TASK_TIMED_OUT: "an attempt ran past the task's timeout",
    Event.TASK_QUARANTINED: "a task's lease expired too many times; it is set aside",
    Event.TASK_RECORDED_BEFORE_RECONNECT: (
        "an outcome whose commit's answer was lost turned out to be recorded"
    ),
    Event.TASK_UNKNOWN: "tasks wait under a name no live worker serves",
    Event.TASKS_SUMMARY: "what a worker's tasks did since its last summary (claims, outcomes)",
    Event.TASK_LINES_SUPPRESSED: (
        "failures came faster than their lines are written; counted instead"
    ),
    Event.LEASE_EXPIRED: "a lease ran out unrenewed; the task was taken over",
    Event.LEASE_LOST: "a worker learned another owner holds its task; its writes are fenced",
    Event.WORKER_STARTED: "a worker registered and began claiming",
    Event.WORKER_DRAINING: "a worker stopped claiming and lets running tasks finish",
    Event.WORKER_DRAIN_REQUESTED: "an operator asked a worker to drain",
    Event.WORKER_DRAINED: "a worker finished its drain",
    Event.WORKER_SELF_FENCED: (
        "a worker lost the database for most of a lease and dropped its tasks"
    ),
    Event.WORKER_STOPPED: "a worker process ended",
    Event.WORKER_GONE: "a worker stopped heartbeating and was marked gone",
}

#: The event each verdict counts as.
VERDICT_EVENTS: dict[Verdict, Event] = {
    Verdict.SUCCEEDED: Event.TASK_SUCCEEDED,
    Verdict.FAILED: Event.TASK_FAILED,
    Verdict.RETRY: Event.TASK_RETRIED,
    Verdict.RELEASED: Event.TASK_RELEASED,
    Verdict.CANCELLED: Event.TASK_CANCELLED,
    Verdict.RECORDED: Event.TASK_RECORDED_BEFORE_RECONNECT,
}

#: How ``complete()`` records what a worker reports (``discarded`` is an error that
#: the verdict ``failed`` does not retry).
RECORDED_AS: dict[Reported, Recorded] = {
    Reported.SUCCEEDED: Recorded.SUCCEEDED,
    Reported.ERROR: Recorded.ERROR,
    Reported.TIMED_OUT: Recorded.TIMED_OUT,
    Reported.DISCARDED: Recorded.ERROR,
    Reported.CANCELLED: Recorded.CANCELLED,
    Reported.RELEASED: Recorded.RELEASED,
}

#: The event a recorded attempt outcome reports, as the dashboard labels it.
RECORDED_EVENTS: dict[Recorded, Event] = {
    Recorded.SUCCEEDED: Event.TASK_SUCCEEDED,
    Recorded.ERROR: Event.TASK_RETRIED,
    Recorded.TIMED_OUT: Event.TASK_TIMED_OUT,
    Recorded.LEASE_EXPIRED: Event.LEASE_EXPIRED,
    Recorded.RELEASED: Event.TASK_RELEASED,
    Recorded.CANCELLED: Event.TASK_CANCELLED,
}


def recorded_event(outcome: str | None) -> str | None:
    """The event a recorded attempt outcome reports (None while the attempt runs; an
    outcome this release does not know, from a newer one, as it is)."""
    if outcome is None:
        return None
    try:
        return RECORDED_EVENTS[Recorded(outcome)]
    except ValueError:
        return outcome
