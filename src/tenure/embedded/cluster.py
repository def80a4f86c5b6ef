"""The PostgreSQL cluster of one data dir: initdb, start, stop, and what is left behind.

Rules:
- Every method that changes something runs under the caller's lock on the data dir
  (:class:`tenure.embedded.server.EmbeddedServer` takes it); this module knows nothing of
  owners or pins.
- initdb runs in a temporary directory renamed into place, so a killed initdb never leaves
  a half-made data dir. The server settings live in ``tenure.conf`` (rewritten at every
  start, included from ``postgresql.conf``); ``ALTER SYSTEM`` overrides them. Durability
  settings stay at PostgreSQL's safe defaults. Local connections are trusted, so the
  socket's directory permissions (0700) are the access control.
- A ``postmaster.pid`` whose pid is not a live postgres running in this data dir is stale:
  it is removed (after orphaned backends of the dead server exit) before starting.
- As root, every PostgreSQL program runs as the system user (:mod:`.rootuser`); a data dir
  whose owner uid no longer exists (the user was recreated) is taken over, one owned by an
  existing user never is.
- The server is started in its own session, so Ctrl-C in a terminal running one owner does
  not shut it down under the others. Failures raise
  :class:`~tenure.errors.EmbeddedServerError` with one line saying what to do and where
  the server log is.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tenure.embedded.binaries import cache_dir, install, wheel_dir
from tenure.embedded.files import fsync_dir, last_line, makedirs, write_atomic
from tenure.embedded.paths import ENV_DIR, PG_MAJOR, PORT, ROLE, beside, socket_dir
from tenure.embedded.procfs import is_postgres_in, postgres_processes
from tenure.embedded.rootuser import check_private_dir, check_searchable, ensure_system_user
from tenure.errors import EmbeddedServerError

START_TIMEOUT_S = 30
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_CONF_FILE = "tenure.conf"

# Settings for a local dev/test server that many worker processes connect to. Durability
# (fsync, synchronous_commit, full_page_writes) is deliberately left at the safe defaults.
_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("listen_addresses", "''", "unix socket only: no clash with a system server"),
    ("port", str(PORT), "names the socket file .s.PGSQL.<port>"),
    ("unix_socket_permissions", "0700", "only the owning user (and root) may connect"),
    ("max_connections", "300", "many worker processes, each with a small pool"),
    ("autovacuum_naptime", "'10s'", "queue tables churn: reclaim dead rows sooner"),
)


class Cluster:
    """The data dir ``data_dir``, its server log and its postmaster."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.socket_dir = socket_dir(data_dir)
        self.log_file = beside(data_dir, ".log")
        self._bindir: Path | None = None
        self._run_as_cache: tuple[int, int] | None = None

    # ---------------------------------------------------------------- what runs

    def postmaster_pid(self) -> tuple[int, str] | None:
        """(pid, status) from ``postmaster.pid``, None if absent or unreadable."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        status = lines[7].strip() if len(lines) > 7 else ""
        return pid, status

    def running(self) -> tuple[int, str] | None:
        """(pid, status) of the live postmaster of the data dir, None if no server runs."""
        info = self.postmaster_pid()
        if info is None or not is_postgres_in(info[0], self.data_dir):
            return None
        return info

    def wait_ready(self, pid: int) -> bool:
        """True once the running server is ready; False if it exits (e.g. was stopping)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            info = self.postmaster_pid()
            if not is_postgres_in(pid, self.data_dir):
                return False
            if info is not None and info[0] == pid and info[1] == "ready":
                return True
            time.sleep(0.05)
        raise self._fail("is running but not ready", f"pid {pid} not ready")

    # ---------------------------------------------------------------- preparation

    @property
    def run_as(self) -> tuple[int, int] | None:
        """(uid, gid) that runs the PostgreSQL programs when we are root, else None."""
        if os.geteuid() != 0:
            return None
        if self._run_as_cache is None:
            self._run_as_cache = ensure_system_user()
        return self._run_as_cache

    def prepare_parent(self) -> None:
        """Create the data dir's parent (where the lock file goes), checking it first."""
        parent = self.data_dir.parent
        run_as = self.run_as
        try:
            if run_as is not None:  # check before creating anything in someone's directory
                existing = next(p for p in (parent, *parent.parents) if p.exists())
                check_searchable(existing, *run_as)
            makedirs(parent, 0o700 if run_as is None else 0o755)
        except OSError as exc:
            raise EmbeddedServerError(
                f"cannot prepare {parent} for the embedded PostgreSQL ({exc.strerror}); "
                f"set {ENV_DIR} to a writable directory"
            ) from exc

    def _bin(self, program: str) -> str:
        if self._bindir is None:
            pkg = wheel_dir()
            cache = cache_dir()
            try:
                self._bindir = install(pkg, cache)
            except OSError as exc:
                if self.run_as is None:  # the wheel's own binaries serve this user
                    self._bindir = pkg / f"pginstall{PG_MAJOR}" / "bin"
                else:
                    raise EmbeddedServerError(
                        f"cannot copy the PostgreSQL binaries into {cache} ({exc.strerror}); "
                        "free space there, or set TENURE_DATABASE_URL to use another server"
                    ) from exc
        return str(self._bindir / program)

    def _chown(self, path: Path) -> None:
        run_as = self.run_as
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
        run_as = self.run_as
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
            f"embedded PostgreSQL {what} ({last_line(detail)}); see the server log "
            f"{self.log_file} (data dir {self.data_dir}), or set TENURE_DATABASE_URL "
            "to use another server"
        )

    def _append_log(self, text: str) -> None:
        with contextlib.suppress(OSError), open(self.log_file, "a") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")

    # ---------------------------------------------------------------- the data dir

    def initdb_if_needed(self) -> bool:
        """Create the cluster if the data dir holds none; True if this ran initdb."""
        data = self.data_dir
        version_file = data / "PG_VERSION"
        if version_file.exists():
            version = version_file.read_text().strip()
            if version != str(PG_MAJOR):
                raise EmbeddedServerError(
                    f"{data} holds a PostgreSQL {version} cluster, not {PG_MAJOR}; move it away "
                    f"or set {ENV_DIR} to another directory"
                )
            return False
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
            fsync_dir(parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    def adopt_orphaned_data_dir(self) -> None:
        """As root, take over a data dir whose owner uid no longer exists.

        That happens when the server user is recreated with another uid (a rebuilt container
        reusing a cached data dir). A data dir owned by an existing user is never touched.
        """
        run_as = self.run_as
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
        write_atomic(conf, "\n".join(lines) + "\n", 0o600)
        self._chown(conf)

    def clear_stale(self) -> None:
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
        while (orphans := postgres_processes(self.data_dir)) and time.monotonic() < deadline:
            time.sleep(0.05)  # backends notice their postmaster's death and exit on their own
        for pid in orphans:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for f in stale:
            with contextlib.suppress(FileNotFoundError):
                f.unlink()

    # ---------------------------------------------------------------- start / stop

    def _prepare_socket_dir(self) -> None:
        if self.socket_dir == self.data_dir:
            return
        run_as = self.run_as
        base = self.socket_dir.parent
        makedirs(base, 0o700 if run_as is None else 0o755)
        check_private_dir(base, os.geteuid())
        makedirs(self.socket_dir, 0o700)
        self._chown(self.socket_dir)
        check_private_dir(self.socket_dir, os.geteuid() if run_as is None else run_as[0])

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

    def start(self) -> None:
        """Start the server on the initialized data dir and wait until it is ready."""
        self._prepare_socket_dir()
        self._prepare_log()
        self._write_conf(self.data_dir)
        log_offset = self.log_file.stat().st_size
        code, out = self._run(
            [
                self._bin("pg_ctl"), "start", "-D", str(self.data_dir), "-l", str(self.log_file),
                "-w", "-t", str(START_TIMEOUT_S), "-s",
            ],
            timeout=START_TIMEOUT_S + 15,
            new_session=True,  # Ctrl-C on one owner's terminal must not stop the server
        )  # fmt: skip
        running = self.running()
        if code != 0 or running is None or running[1] != "ready":
            detail = self._server_complaint(log_offset) or out.strip() or "no output"
            if code == -1:
                detail = f"pg_ctl start timed out; {detail}"
            self._append_log(f"tenure: pg_ctl start exited {code}: {out}")
            raise self._fail("did not start", detail)

    def stop(self) -> bool:
        """Fast shutdown of the server if it runs; True if it did."""
        running = self.running()
        if running is None:
            return False
        pid = running[0]
        code, out = self._run(
            [
                self._bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                "-t", str(START_TIMEOUT_S), "-s",
            ],
            timeout=START_TIMEOUT_S + 15,
        )  # fmt: skip
        if code != 0 or is_postgres_in(pid, self.data_dir):
            self._append_log(f"tenure: pg_ctl stop exited {code}: {out}")
            for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while is_postgres_in(pid, self.data_dir) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not is_postgres_in(pid, self.data_dir):
                    break
            else:
                raise self._fail("did not stop", out or f"pid {pid} survived SIGKILL")
        return True
