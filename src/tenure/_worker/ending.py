"""How one call of a task's function ended, and the one mapping from that to the
attempt's outcome, for thread, async and process tasks alike.

A call ends where it ran (a pool thread, the event loop, a task process) as an
:class:`Ending`: plain data, made storable there (see :mod:`tenure.limits`), so it can
cross from a task process as it is. :func:`outcome` is the only place that turns an
ending into what the completer writes:

- ``ok``: succeeded, with the result's JSON text;
- ``invalid`` (the payload does not validate), ``discard`` (the task raised
  ``Discard``) and ``refused`` (a result too large to store): failed at once, since the
  same code would end the same way again;
- ``retry_after``: retried after the delay the task asked for;
- ``error``, ``not_json`` (a result that is not JSON), ``died`` (the task's process
  died) and ``timed_out``: retried after the task's backoff until ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import pydantic_core

from tenure._store.worker_rows import Claimed, Outcome
from tenure.errors import Discard, PayloadInvalid, RetryAfter
from tenure.limits import Limits, not_json
from tenure.registry import Task
from tenure.states import Reported

log = logging.getLogger(__name__)

Kind = Literal[
    "ok", "invalid", "discard", "refused", "retry_after", "error", "not_json", "died", "timed_out"
]

NOT_JSON = "result is not JSON: it holds NaN or an infinity; return null or a string"


@dataclass(frozen=True)
class Ending:
    """How a call ended: ``text`` is the result's JSON text as stored for ``ok``, the
    reason otherwise; ``delay`` the seconds a ``retry_after`` asked for."""

    kind: Kind
    text: str = ""
    delay: float = 0.0
    slow: tuple[float, float] | None = None  # a retry_after's slow_down and slow_for


def call(task: Task[Any, Any], payload: str, limits: Limits) -> Ending:
    """Validate ``payload``, call the task's function (running a coroutine it returns
    to its end) and make the ending storable, all in the calling thread or process."""
    try:
        value = task.decode(payload)
    except Exception as exc:
        return invalid_payload(task, exc, limits)
    try:
        result = task.fn(value)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except BaseException as exc:
        return raised(exc, limits)
    return returned(result, limits)


def invalid_payload(task: Task[Any, Any], exc: Exception, limits: Limits) -> Ending:
    """A payload that does not validate; a validator that raised something else than
    ``PayloadInvalid`` says so in the reason."""
    if isinstance(exc, PayloadInvalid):
        return Ending("invalid", limits.error_text(str(exc)))
    return Ending(
        "invalid", limits.error_text(f"{task.name}: payload invalid: {type(exc).__name__}: {exc}")
    )


def raised(exc: BaseException, limits: Limits) -> Ending:
    """The ending of a call that raised ``exc``."""
    if isinstance(exc, RetryAfter):
        slow = None if exc.slow_down is None else (exc.slow_down, exc.slow_for)
        text = limits.error_text(str(exc.reason))
        return Ending("retry_after", text, exc.delay.total_seconds(), slow)
    if isinstance(exc, Discard):
        return Ending("discard", limits.error_text(str(exc.reason)))
    return Ending("error", limits.exception_text(exc))


def returned(value: Any, limits: Limits) -> Ending:
    """A result encoded as it will be stored, or why it cannot be."""
    if value is None:  # most tasks return nothing
        return Ending("ok", "null")
    why = limits.precheck_result(value)  # told from its strings, before encoding
    if why is not None:
        return Ending("refused", why)
    try:
        encoded = pydantic_core.to_json(value)
    except Exception as exc:  # not JSON, or a serializer of the user's that raised
        return Ending("not_json", limits.error_text(f"result is not JSON: {_describe(exc)}"))
    why = limits.check_result(encoded)
    if why is not None:
        return Ending("refused", why)
    text = encoded.decode("utf-8", "backslashreplace")
    if not_json(text):
        return Ending("not_json", NOT_JSON)
    return Ending("ok", _jsonb_text(text))


def timed_out(timeout: float) -> Ending:
    return Ending("timed_out", f"timed out after {timeout:g}s")


def outcome(task: Task[Any, Any], claimed: Claimed, ending: Ending) -> Outcome:
    """What the completer writes for ``claimed``'s attempt that ended so."""
    tid, attempt, kind = claimed.id, claimed.attempt, ending.kind
    if kind != "ok":
        # DEBUG: the task_retried or task_failed line says it, rate-limited
        log.debug("task_ended task=%s attempt=%s how=%s: %s", tid, attempt, kind, ending.text)
    if kind == "ok":
        return Outcome(tid, attempt, Reported.SUCCEEDED, result=ending.text)
    if kind in ("invalid", "discard", "refused"):
        return Outcome(tid, attempt, Reported.DISCARDED, error=ending.text)
    if kind == "retry_after":
        return Outcome(
            tid, attempt, Reported.ERROR, error=ending.text, delay=ending.delay, slow=ending.slow
        )
    delay = task.options.backoff.delay(claimed.errors + 1).total_seconds()
    if kind == "timed_out":
        return Outcome(tid, attempt, Reported.TIMED_OUT, error=ending.text, delay=delay)
    return Outcome(
        tid, attempt, Reported.ERROR, error=ending.text, delay=delay
    )  # error, not_json, died


def _describe(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return type(exc).__qualname__


_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _jsonb_text(encoded: str) -> str:
    """JSON text PostgreSQL's jsonb accepts: it refuses the NUL escape."""
    if "\\u0000" not in encoded:
        return encoded
    return _NUL_ESCAPE.sub(lambda m: m.group(1) + "\\ufffd", encoded)
