"""Supervisor: ``tenure worker ... --processes N`` runs N worker processes and keeps
them running.

Rules:
- Each child is an ordinary ``tenure worker`` process with the same arguments (less
  ``--processes``), so everything a worker guarantees holds per child.
- A child that exits while the supervisor is not stopping is restarted. The first
  restart after a quiet minute is immediate; further restarts of that slot within
  the minute back off exponentially (0.5 s, 1 s, 2 s … capped at 30 s), so a
  crash-looping child never spins. Every restart is logged as ``child_restarted``.
- A child that exits with ``START_FAILED`` (its configuration or database refuses
  it, and waiting cannot mend that) is not restarted: the others are drained and
  the supervisor exits with that code.
- SIGTERM or SIGINT: every child gets SIGTERM and drains; the supervisor exits 0
  once all have exited. A second signal kills the children and exits at once.
- Children get SIGTERM if the supervisor itself dies (Linux parent-death signal),
  so no worker is left behind: each drains, and its task processes end with it. A
  child whose supervisor died before that signal was set up exits before it starts.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from tenure._db.connect import ENV_DSN
from tenure._durations import exponential
from tenure._worker.lineage import START_FAILED, die_with_parent

log = logging.getLogger(__name__)

RESTART_WINDOW = 60.0
RESTART_BACKOFF_BASE = 0.5
RESTART_BACKOFF_CAP = 30.0
TICK = 0.05


def restart_delay(recent_restarts: int) -> float:
    """Seconds to wait before a restart, given restarts of that slot in the window."""
    return exponential(recent_restarts, base=RESTART_BACKOFF_BASE, cap=RESTART_BACKOFF_CAP)


@dataclass
class Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    total_restarts: int = 0


class Supervisor:
    """Runs ``processes`` copies of ``argv`` and restarts the ones that die."""

    def __init__(self, argv: list[str], processes: int, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.env = env or {}
        self.slots = [Slot(i) for i in range(processes)]
        self._signals = 0

    def _spawn(self, slot: Slot) -> None:
        env = {**os.environ, **self.env, "TENURE_SUPERVISED_SLOT": str(slot.index)}
        # The child drains when this process dies; it runs between fork and exec.
        drain_on_death = functools.partial(die_with_parent, os.getpid(), signal.SIGTERM)
        slot.proc = subprocess.Popen(self.argv, env=env, preexec_fn=drain_on_death)
        slot.restart_at = None
        log.info("child_started slot=%d pid=%d", slot.index, slot.proc.pid)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("supervisor_draining signal=%d children=%d", signum, len(self.slots))
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is None:
                    slot.proc.send_signal(signal.SIGTERM)
        else:
            log.warning("supervisor_stopped_now: killing children")
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is None:
                    slot.proc.kill()
            os._exit(1)

    def run(self) -> int:
        """Supervise until a signal asks to stop; returns the exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in self.slots:
            self._spawn(slot)
        while True:
            now = time.monotonic()
            alive = 0
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is None:
                    alive += 1
                    continue
                if self._signals:
                    continue
                if slot.proc is not None and slot.proc.returncode == START_FAILED:
                    log.error(
                        "supervisor_stopped slot=%d: a worker cannot start (its error is "
                        "above); not restarting: fix it, then start again",
                        slot.index,
                    )
                    self._stop_all()
                    return START_FAILED
                if slot.proc is not None:
                    self._schedule_restart(slot, now)
                if slot.restart_at is not None and now >= slot.restart_at:
                    self._spawn(slot)
                    alive += 1
            if self._signals and alive == 0:
                log.info(
                    "supervisor_stopped restarts=%d", sum(s.total_restarts for s in self.slots)
                )
                return 0
            time.sleep(TICK)

    def _stop_all(self) -> None:
        """Drain every live child and wait for it (a second signal still kills)."""
        self._signals = max(self._signals, 1)
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.wait()

    def _schedule_restart(self, slot: Slot, now: float) -> None:
        assert slot.proc is not None
        code = slot.proc.returncode
        slot.proc = None
        while slot.restarts and now - slot.restarts[0] > RESTART_WINDOW:
            slot.restarts.popleft()
        delay = restart_delay(len(slot.restarts))
        slot.restarts.append(now)
        slot.total_restarts += 1
        slot.restart_at = now + delay
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        log.warning(
            "child_restarted slot=%d after=%s delay=%.1fs restarts_in_window=%d",
            slot.index,
            how,
            delay,
            len(slot.restarts),
        )


def child_argv(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """This command line for a child: the same worker without ``--processes``, and
    the environment it adds. A ``--dsn`` moves to the child's ``TENURE_DATABASE_URL``:
    a password in a command line is visible to every user in ``ps``."""
    out: list[str] = []
    env: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        if arg in ("--processes", "--dsn"):
            value = next(args, "")
            if arg == "--dsn":
                env[ENV_DSN] = value
            continue
        if arg.startswith("--processes="):
            continue
        if arg.startswith("--dsn="):
            env[ENV_DSN] = arg.removeprefix("--dsn=")
            continue
        out.append(arg)
    return [sys.executable, "-m", "tenure", *out], env
