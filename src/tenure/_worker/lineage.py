"""Lineage: a process that ends when the process that started it ends.

Rules:
- ``die_with_parent(parent, sig)`` asks Linux to send ``sig`` to this process the
  moment its parent ends, however it ends (``PR_SET_PDEATHSIG``; the parent is the
  *thread* that started it, so start children from a thread that outlives them).
  It then checks that ``parent`` is still its parent: a parent that died before the
  request was made is not signalled, so the process exits at once (code 0, quietly).
  Without ``prctl`` (not Linux) only the check is made.
- ``exit_at_eof(lifeline)`` is the watch that needs no ``prctl``: a daemon thread
  waits on the read end of a pipe whose write end only the parent holds and never
  writes to; at end of file (the parent is gone) it ends the process with
  ``os._exit`` — no cleanup, no traceback.
"""

from __future__ import annotations

import ctypes
import os
import threading
from multiprocessing.connection import Connection

_PR_SET_PDEATHSIG = 1

# The exit code of a worker whose start-up cannot succeed by retrying (sysexits'
# EX_CONFIG): its supervisor does not restart it.
START_FAILED = 78


def die_with_parent(parent: int, sig: int) -> None:
    """Get ``sig`` when the parent ends; exit now if ``parent`` is already gone.

    Safe between fork and exec (a ``preexec_fn``) and first thing in a child."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl here: the caller's watch must do
        pass
    if os.getppid() != parent:
        os._exit(0)


def exit_at_eof(lifeline: Connection) -> threading.Thread:
    """End this process as soon as nobody holds ``lifeline``'s write end any more."""

    def watch() -> None:
        try:
            lifeline.poll(None)  # only readable at end of file: the parent never writes
        except (OSError, ValueError):
            pass
        os._exit(0)

    thread = threading.Thread(target=watch, name="tenure-lifeline", daemon=True)
    thread.start()
    return thread
