"""Task lines in a worker's log: every failure with its reason, and a periodic summary.

Rules:
- An attempt that ends in error, times out or fails for good is one line at the
  default level, with its reason: ``task_retried`` (WARNING, with the delay before
  the next attempt) or ``task_failed`` (ERROR, no attempt left). The reason is the
  error's own line: the exception line of a traceback (the first line after its
  last frame), else the text's first line, cut to ``REASON_CHARS``. The log
  formatter makes it inert (no control character reaches the log).
- Failure lines are rate-limited, so that a flood of poison tasks cannot fill a
  disk: ``FAILURE_BURST`` at once, then ``FAILURE_RATE`` a second. The first line
  left out says so in one line; the next summary counts them (``suppressed=``).
- Claims, successes, releases and cancellations are one line per task at DEBUG
  only. At INFO, a ``tasks_summary`` line every ``summary_interval`` while tasks
  were claimed or finished counts what happened since the previous one, and a
  last one when the worker stops.
- The summary reads the worker's event counters from a
  :class:`~tenure._worker.status.WorkerStatus` snapshot, so the hot path pays
  nothing for it; only a failure pays for its line.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from tenure._store.worker_rows import Outcome
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.service import Service
from tenure._worker.state import Held
from tenure._worker.status import WorkerStatus
from tenure.states import Event

log = logging.getLogger(__name__)

FAILURE_RATE = 10.0  # failure lines a second, once the burst is spent
FAILURE_BURST = 50
REASON_CHARS = 300

#: Settled events that are failures, and the level of their line.
FAILURES = {Event.TASK_RETRIED: logging.WARNING, Event.TASK_FAILED: logging.ERROR}

#: What a summary counts: its field name and the event counter it reads.
SUMMED = (
    ("claimed", Event.TASK_CLAIMED),
    ("succeeded", Event.TASK_SUCCEEDED),
    ("retried", Event.TASK_RETRIED),
    ("failed", Event.TASK_FAILED),
    ("cancelled", Event.TASK_CANCELLED),
    ("released", Event.TASK_RELEASED),
    ("lease_lost", Event.LEASE_LOST),
)
_FINISHED = ("succeeded", "retried", "failed", "cancelled", "released")
_MARGIN = re.compile(r"^\s*\| ?")
_HEAD = "Traceback (most recent call last):"


def _group_head(line: str) -> bool:
    """The header of an exception group's traceback, at the top level (the text may
    have been stripped of its first two spaces)."""
    return line.lstrip(" ").startswith("+ Exception Group Traceback") and line[:3] != "   "


def reason(error: str | None) -> str:
    """The line of an error text that says what went wrong.

    >>> reason("Traceback (most recent call last):\\n  File 'x', line 1\\nValueError: bad\\nmore")
    'ValueError: bad'
    >>> reason("timed out after 5s")
    'timed out after 5s'
    """
    lines = [line for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return "no reason given"
    # A chained traceback ends with the exception raised last: read from its header.
    heads = [i for i, line in enumerate(lines) if line == _HEAD or _group_head(line)]
    if heads:
        lines = lines[heads[-1] :]
    if _group_head(lines[0]):
        # A group's own traceback, its "| " margin taken off, up to its first member.
        top = []
        for line in lines[1:]:
            if line.lstrip().startswith("+-"):
                break
            top.append(_MARGIN.sub("", line, count=1))
        lines = top or lines
    # The exception line: the first line at the margin after the last frame (a frame is
    # its "  File" line, its source line and its carets, all indented).
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    after = lines[frames[-1] + 1 :] if frames else []
    pick = next((line for line in after if not line[:1].isspace()), lines[0]).strip()
    return pick if len(pick) <= REASON_CHARS else pick[: REASON_CHARS - 1] + "…"


@dataclass(frozen=True)
class Summary:
    """What one ``tasks_summary`` line said."""

    counts: dict[str, int]
    running: int
    prefetched: int
    per_s: float
    suppressed: int
    seconds: float


class TaskLog(Service):
    """Writes a worker's task lines: failures as they settle, summaries on a timer."""

    name = "task_log"

    def __init__(
        self,
        worker_id: UUID,
        interval: float,
        status: Callable[[], WorkerStatus],
        *,
        clock: Clock = MONOTONIC,
        rate: float = FAILURE_RATE,
        burst: int = FAILURE_BURST,
    ) -> None:
        super().__init__(interval, jitter=0.0, clock=clock)
        self.worker_id = worker_id
        self.status = status
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._refilled = clock.now()
        self._since = clock.now()
        self._seen: Counter[str] = Counter()
        self.suppressed = 0  # failure lines left out since the last summary

    # -- per attempt (called by the claim loop as it settles outcomes) ------------

    def settled(self, event: Event, outcome: Outcome, held: Held | None) -> None:
        """One settled outcome: a failure's line (rate-limited), else a DEBUG line."""
        level = FAILURES.get(event)
        if level is None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s task=%s attempt=%s queue=%s worker=%s",
                    event,
                    outcome.task_id,
                    outcome.attempt,
                    held.claimed.queue if held is not None else "-",
                    self.worker_id,
                )
            return
        if not log.isEnabledFor(level) or not self._allow():
            return
        name, queue = (held.claimed.task_name, held.claimed.queue) if held else ("-", "-")
        retry = f" retry_in={outcome.delay:g}s" if event == "task_retried" else ""
        log.log(
            level,
            "%s task=%s attempt=%s task_name=%s queue=%s worker=%s outcome=%s%s: %s",
            event,
            outcome.task_id,
            outcome.attempt,
            name,
            queue,
            self.worker_id,
            outcome.outcome,
            retry,
            reason(outcome.error),
        )

    def _allow(self) -> bool:
        """Take a token for a failure line; count the line as suppressed if none is left."""
        now = self.clock.now()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        if not self.suppressed:
            log.warning(
                "task_lines_suppressed worker=%s rate=%g/s: more task failures than that; "
                "the next tasks_summary counts the lines left out",
                self.worker_id,
                self.rate,
            )
        self.suppressed += 1
        return False

    # -- summary ---------------------------------------------------------------------

    async def run_once(self) -> Summary | None:
        return self.summarise()

    def summarise(self) -> Summary | None:
        """Log what happened since the last summary; None (and no line) if nothing did."""
        now = self.clock.now()
        status = self.status()
        counts = status.events
        delta = {field: counts.get(event, 0) - self._seen[event] for field, event in SUMMED}
        seconds, self._since = now - self._since, now
        self._seen = Counter({event: counts.get(event, 0) for _, event in SUMMED})
        if not any(delta.values()) and not self.suppressed:
            return None
        finished = sum(delta[field] for field in _FINISHED)
        summary = Summary(
            counts=delta,
            running=status.running,
            prefetched=status.prefetched,
            per_s=finished / seconds if seconds > 0 else 0.0,
            suppressed=self.suppressed,
            seconds=seconds,
        )
        self.suppressed = 0
        log.info(
            "tasks_summary worker=%s %s running=%d prefetched=%d per_s=%.1f suppressed=%d "
            "over=%.1fs",
            self.worker_id,
            " ".join(f"{field}={n}" for field, n in delta.items()),
            summary.running,
            summary.prefetched,
            summary.per_s,
            summary.suppressed,
            seconds,
        )
        return summary
