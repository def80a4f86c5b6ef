"""Who keeps the embedded server running: its owners and its pin.

Rules:
- A process that uses the server joins (``ensure_embedded``) and leaves at exit (atexit);
  ``tenure db start`` pins it, so it keeps running with no process attached until
  ``tenure db stop``. Both live in ``<data dir>.owners`` next to the data dir:
  ``{"pinned": bool, "owners": [{pid, start}]}``, each owner with its kernel start time
  (so a reused pid is not mistaken for a live owner).
- Every read or write of that file, initdb, start and stop happen under the exclusive lock
  on ``<data dir>.lock``: many processes joining at once all succeed and exactly one of
  them runs initdb and starts the server.
- The server stops when nothing keeps it: no live owner and no pin. The last owner to
  leave stops it (fast shutdown), whether it exits normally, on SIGINT (KeyboardInterrupt
  runs atexit) or on SIGTERM in tenure's commands (the worker drains, the dashboard exits
  0). An owner that dies without exiting (SIGKILL, or SIGTERM in a program that leaves its
  default action) cannot: whichever tenure process next looks finds the dead owner and,
  when no live owner and no pin remain, stops the server (:meth:`EmbeddedServer.reap`,
  run by ``leave`` and ``tenure db start|stop|status|url``). A process that joins a server
  whose owners all died simply joins it. ``stop()`` stops it whoever owns it.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

from tenure.embedded.cluster import Cluster
from tenure.embedded.files import flock, write_atomic
from tenure.embedded.paths import beside, embedded_dsn, resolve
from tenure.embedded.procfs import pid_alive, process_start
from tenure.errors import EmbeddedServerInUse


class EmbeddedStatus(TypedDict):
    """What :func:`embedded_status` reports."""

    data_dir: str
    dsn: str
    initialized: bool
    running: bool
    pid: int | None
    pinned: bool  # kept running by ``tenure db start`` until ``tenure db stop``
    owners: list[int]  # live processes using it
    log_file: str


_refs_lock = threading.Lock()
_refs: dict[tuple[int, Path], int] = {}  # (pid, data dir) -> joined instances in this process


class EmbeddedServer:
    """The embedded server of one data dir, as seen by this process.

    ``join()`` starts it if needed (initdb on first use) and registers this process as an
    owner; ``leave()`` unregisters, stopping the server if no live owner remains.

    >>> server = EmbeddedServer("/tmp/my-pg")  # doctest: +SKIP
    >>> dsn = server.join()                    # doctest: +SKIP
    """

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self.data_dir = resolve(data_dir)
        self._cluster = Cluster(self.data_dir)
        self.socket_dir = self._cluster.socket_dir
        self.log_file = self._cluster.log_file
        self.lock_file = beside(self.data_dir, ".lock")
        self.owners_file = beside(self.data_dir, ".owners")
        self.dsn = embedded_dsn(self.data_dir)
        self.ran_initdb = False  # whether the last join() of this instance ran initdb
        self.started_server = False  # whether the last join() of this instance started it
        self._joined_pid: int | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- public

    @property
    def joined(self) -> bool:
        """Whether this process (not a parent it was forked from) has joined."""
        return self._joined_pid == os.getpid()

    def join(self) -> str:
        """Start the server if it is not running, register this process, return the DSN."""
        with self._lock:
            if self.joined:
                return self.dsn
            self._enter(owner=True)
            self._joined_pid = os.getpid()
            key = (os.getpid(), self.data_dir)
            with _refs_lock:
                _refs[key] = _refs.get(key, 0) + 1
            return self.dsn

    def pin(self) -> bool:
        """Start the server if needed and keep it running, owned by no process, until
        :meth:`stop` (``tenure db start``). True if this call started it."""
        with self._lock:
            self._enter(owner=False)
        return self.started_server

    def leave(self) -> None:
        """Unregister this process; stop the server if no live owner and no pin remain."""
        with self._lock:
            if not self.joined:
                return
            self._joined_pid = None
            key = (os.getpid(), self.data_dir)
            with _refs_lock:
                _refs[key] = _refs.get(key, 1) - 1
                if _refs[key] > 0:
                    return  # another instance in this process still holds the server
                del _refs[key]
            self._release(forget=os.getpid())

    def reap(self) -> bool:
        """Forget dead owners and stop the server if no live owner and no pin remain.

        What the last owner would have done had it exited rather than been killed. True if
        this stopped the server."""
        if not self.data_dir.is_dir():
            return False  # no data dir: no server, and nothing to create
        return self._release(forget=None)

    def stop(self, *, force: bool = True) -> bool:
        """Stop the server and forget its owners and pin; True if it was running.

        With ``force=False`` a server that live processes (other than this one) use is left
        running and :class:`~tenure.errors.EmbeddedServerInUse` names them; dead owners are
        forgotten.
        """
        if not self.lock_file.parent.is_dir():
            return False
        with flock(self.lock_file):
            pinned, listed = self._read_owners()
            running = self._cluster.running()
            users = [pid for pid, start in listed if pid != os.getpid() and pid_alive(pid, start)]
            if running is not None and users and not force:
                self._write_owners([o for o in listed if pid_alive(*o)], pinned)
                raise EmbeddedServerInUse(running[0], users)
            self._write_owners([], pinned=False)
            return self._cluster.stop()

    def status(self) -> EmbeddedStatus:
        """A snapshot, read without the lock (dead owners are left out, not forgotten)."""
        running = self._cluster.running()
        pinned, listed = self._read_owners()
        return {
            "data_dir": str(self.data_dir),
            "dsn": self.dsn,
            "initialized": (self.data_dir / "PG_VERSION").exists(),
            "running": running is not None,
            "pid": running[0] if running else None,
            "pinned": pinned,
            "owners": [pid for pid, start in listed if pid_alive(pid, start)],
            "log_file": str(self.log_file),
        }

    # ---------------------------------------------------------------- owners

    def _enter(self, *, owner: bool) -> None:
        """Start the server if needed; add this process as an owner, or pin the server."""
        self.ran_initdb = self.started_server = False
        self._cluster.prepare_parent()
        with flock(self.lock_file):
            self._ensure_running()
            pinned, listed = self._read_owners()
            me = os.getpid()
            owners = [o for o in listed if o[0] != me and pid_alive(*o)]
            if owner:
                owners.append((me, process_start(me)))
            self._write_owners(owners, pinned or not owner)

    def _ensure_running(self) -> None:
        """Under the lock: make sure a ready server runs on the data dir."""
        cluster = self._cluster
        running = cluster.running()
        if running is not None and cluster.wait_ready(running[0]):
            return
        self.ran_initdb = cluster.initdb_if_needed()
        cluster.adopt_orphaned_data_dir()
        cluster.clear_stale()
        cluster.start()
        self.started_server = True

    def _release(self, *, forget: int | None) -> bool:
        """Drop ``forget`` and dead owners; stop the server if nothing keeps it. True if so."""
        with flock(self.lock_file):
            pinned, listed = self._read_owners()
            owners = [o for o in listed if o[0] != forget and pid_alive(*o)]
            if owners != listed:
                self._write_owners(owners, pinned)
            if owners or pinned:
                return False
            return self._cluster.stop()

    def _read_owners(self) -> tuple[bool, list[tuple[int, int]]]:
        """(pinned, every listed owner as (pid, start time), alive or not)."""
        try:
            raw = json.loads(self.owners_file.read_text())
            owners = [(int(o["pid"]), int(o["start"])) for o in raw["owners"]]
            return bool(raw.get("pinned", False)), owners
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False, []

    def _write_owners(self, owners: Sequence[tuple[int, int]], pinned: bool) -> None:
        data = {"pinned": pinned, "owners": [{"pid": pid, "start": start} for pid, start in owners]}
        write_atomic(self.owners_file, json.dumps(data) + "\n")


# --------------------------------------------------------------------------- module API

_default_lock = threading.Lock()
_default: EmbeddedServer | None = None


def _leave_at_exit(server: EmbeddedServer) -> None:
    try:
        server.leave()
    except Exception as exc:  # exiting anyway: one line, no traceback
        print(f"tenure: leaving the embedded PostgreSQL failed: {exc}", file=sys.stderr)


def ensure_embedded() -> str:
    """Join the embedded server once per process (leaving at exit); return its DSN.

    >>> psycopg.connect(ensure_embedded())  # doctest: +SKIP
    """
    global _default
    with _default_lock:
        if _default is None or not _default.joined:
            server = EmbeddedServer()
            server.join()
            atexit.register(_leave_at_exit, server)
            _default = server
        return _default.dsn


def stop_embedded(data_dir: Path | None = None, *, force: bool = True) -> bool:
    """Stop the embedded server; True if it was running.

    By default whoever uses it; with ``force=False`` a server that live processes use is
    left running and :class:`~tenure.errors.EmbeddedServerInUse` names them."""
    return EmbeddedServer(data_dir).stop(force=force)


def embedded_status(data_dir: Path | None = None) -> EmbeddedStatus:
    """Data dir, DSN, whether initialized and running, postmaster pid, live owner pids, log."""
    return EmbeddedServer(data_dir).status()
