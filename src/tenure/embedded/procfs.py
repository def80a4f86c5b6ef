"""What ``/proc`` says about a process: alive, started when, a postgres running where.

Rules:
- A process is named by its pid *and* its kernel start time, so a reused pid is not
  mistaken for the process that had it; a zombie is dead.
- Without ``/proc`` (not Linux) a pid that answers ``kill(pid, 0)`` is taken as alive and
  start times are 0 (unknown, matching any).
"""

from __future__ import annotations

import os
from pathlib import Path

HAVE_PROC = os.path.exists("/proc/self/stat")
_DEAD_STATES = ("Z", "X", "x")


def proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, start time in clock ticks since boot) of ``pid``, None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    right = data.rfind(b")")
    comm = data[data.find(b"(") + 1 : right].decode(errors="replace")
    fields = data[right + 2 :].split()
    return comm, fields[0].decode(), int(fields[19])  # fields 3 and 22 of proc(5)


def process_start(pid: int) -> int:
    """The kernel start time of ``pid`` (clock ticks since boot); 0 if unknown or gone."""
    st = proc_stat(pid) if HAVE_PROC else None
    return st[2] if st else 0


def pid_alive(pid: int, start: int | None = None) -> bool:
    """True if ``pid`` runs (zombies are dead) and, when given, started at ``start``."""
    if pid <= 0:
        return False
    if HAVE_PROC:
        st = proc_stat(pid)
        if st is None or st[1] in _DEAD_STATES:
            return False
        return start is None or start == 0 or st[2] == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_postgres_in(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is a live postgres process whose working dir is ``data_dir``."""
    if not HAVE_PROC:
        return pid_alive(pid)
    st = proc_stat(pid)
    if st is None or st[1] in _DEAD_STATES or st[0] != "postgres":
        return False
    try:
        return os.readlink(f"/proc/{pid}/cwd") == str(data_dir)
    except OSError:  # gone, or another user's process: not a server we could have started
        return False


def postgres_processes(data_dir: Path) -> list[int]:
    """Pids of every live postgres process running in ``data_dir`` (Linux only)."""
    if not HAVE_PROC:
        return []
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and is_postgres_in(int(name), data_dir):
            pids.append(int(name))
    return pids
