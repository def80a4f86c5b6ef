"""Checks during the run: the invariant checker over the rows written so far, every few seconds.

Rules:
- One daemon thread with its own connection; each pass is one ``check(final=False)``
  in a single snapshot, so a task moving between tables mid-read is never miscounted.
- A pass that finds a violation records it with its time since the campaign began and
  its examples (unless the pass before found the same); the campaign fails on it even
  if the final check would not see it.
- Each pass also samples the oldest expired lease still ``running`` (invariant 1:
  reaped within a lease and a sweep).
- A pass that cannot reach the database (a restart in progress) is skipped; the next
  one reconnects. Passes never overlap and are spaced at least twice their own cost,
  so the checker never takes more than a third of a core from the campaign.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from chaos.checker import Fault, check, stale_leases


@dataclass(frozen=True)
class Finding:
    """A violation a pass saw: when (seconds into the campaign) and what."""

    at: float
    violations: tuple[str, ...]
    examples: tuple[str, ...]

    def __str__(self) -> str:
        return f"at {self.at:.1f}s: {', '.join(self.violations)} {list(self.examples)}"


@dataclass
class Monitor:
    dsn: str
    schema: str
    faults: Callable[[], list[Fault]]
    t0: float
    interval: float = 3.0
    passes: int = 0
    findings: list[Finding] = field(default_factory=list)
    max_stale_lease: float = 0.0
    say: Callable[[str], None] = print
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="chaos-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        wait = self.interval
        while not self._stop.wait(wait):
            began = time.monotonic()
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
                self.run_once(conn)
            except psycopg.Error:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
            wait = max(self.interval, 2 * (time.monotonic() - began))
        if conn is not None:
            conn.close()

    def run_once(self, conn: psycopg.Connection[Any]) -> Finding | None:
        """One pass: sample stale leases, check the invariants; the finding, if any."""
        self.max_stale_lease = max(self.max_stale_lease, stale_leases(conn, self.schema))
        report = check(conn, self.schema, None, self.faults(), final=False, takeovers=False)
        self.passes += 1
        found = tuple(report.violations())
        if not found:
            return None
        finding = Finding(time.monotonic() - self.t0, found, tuple(report.examples[:5]))
        if not self.findings or self.findings[-1].violations != found:  # news only
            self.findings.append(finding)
            self.say(f"MID-RUN VIOLATION {finding}")
        return finding
