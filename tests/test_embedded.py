"""The embedded PostgreSQL server: real servers, real processes, real signals; no mocks.

Each test gets its own data dir (never the default one) and stops its server at the end,
even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from tenure import EmbeddedServerError, TenureError
from tenure.embedded import (
    ENV_DIR,
    EmbeddedServer,
    embedded_dsn,
    embedded_status,
    stop_embedded,
)
from tests.conftest import tenure_cli

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and signals")

# A process that joins (leaving through atexit), reports, then waits for a line on stdin.
OWNER = """
import json, sys
from tenure.embedded import ensure_embedded
dsn = ensure_embedded()
print(json.dumps({"dsn": dsn}), flush=True)
sys.stdin.readline()
"""

# A process that waits for a common instant, joins, reports, waits for stdin, then leaves.
RACER = """
import json, sys, time
from tenure.embedded import EmbeddedServer
server = EmbeddedServer()
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
dsn = server.join()
print(json.dumps({"dsn": dsn, "initdb": server.ran_initdb, "started": server.started_server}),
      flush=True)
sys.stdin.readline()
server.leave()
"""


def _postgres_pids(data_dir: Path) -> list[int]:
    """Live (non-zombie) postgres processes running in ``data_dir``."""
    pids = []
    for proc in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if (
                proc.info["name"] == "postgres"
                and proc.status() != psutil.STATUS_ZOMBIE
                and proc.cwd() == str(data_dir)
            ):
                pids.append(proc.pid)
    return pids


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


class Procs:
    """Subprocesses of one test, all killed at teardown."""

    def __init__(self, data_dir: Path) -> None:
        self.env = {**os.environ, ENV_DIR: str(data_dir)}
        self.all: list[subprocess.Popen[str]] = []

    def spawn(self, script: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self.all.append(proc)
        return proc

    @staticmethod
    def report(proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            assert proc.stderr is not None
            pytest.fail(f"owner process failed: {proc.wait(10)=} {proc.stderr.read()}")
        result: dict[str, Any] = json.loads(line)
        return result

    @staticmethod
    def finish(proc: subprocess.Popen[str]) -> None:
        """Let the process leave and exit normally."""
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""

    def kill_all(self) -> None:
        for proc in self.all:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs(data_dir: Path) -> Iterator[Procs]:
    p = Procs(data_dir)
    try:
        yield p
    finally:
        p.kill_all()


def test_join_connects_to_postgres_18_on_a_unix_socket_only(data_dir: Path) -> None:
    server = EmbeddedServer(data_dir)
    dsn = server.join()
    try:
        assert dsn == embedded_dsn(data_dir) == server.join()  # deterministic, idempotent
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
            version = conn.execute("select current_setting('server_version_num')::int").fetchone()
            assert version is not None and version[0] // 10000 == 18
            settings = conn.execute(
                "select current_setting('listen_addresses'),"
                " current_setting('max_connections')::int, current_setting('fsync')"
            ).fetchone()
            assert settings == ("", 300, "on")
        status = embedded_status(data_dir)
        assert status["running"] and status["owners"] == [os.getpid()]
        pid = status["pid"]
        assert pid is not None
        inet = list(psutil.Process(pid).net_connections(kind="inet"))
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):  # a backend may just have exited
                inet += child.net_connections(kind="inet")
        assert inet == []  # the postmaster (and everything else) stays off TCP
        if os.geteuid() == 0:
            assert psutil.Process(pid).username() == "tenure-pg"
    finally:
        server.leave()
    assert not embedded_status(data_dir)["running"]
    assert _wait_for(lambda: _postgres_pids(data_dir) == [])


def test_first_leaving_keeps_the_server_last_leaving_stops_it(data_dir: Path, procs: Procs) -> None:
    first, second = procs.spawn(OWNER), procs.spawn(OWNER)
    dsns = {procs.report(first)["dsn"], procs.report(second)["dsn"]}
    assert dsns == {embedded_dsn(data_dir)}
    status = embedded_status(data_dir)
    assert status["running"] and sorted(status["owners"]) == sorted([first.pid, second.pid])
    postmaster = status["pid"]
    assert postmaster is not None

    procs.finish(first)
    status = embedded_status(data_dir)
    assert status["running"] and status["pid"] == postmaster
    assert status["owners"] == [second.pid]
    with psycopg.connect(embedded_dsn(data_dir)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)

    procs.finish(second)
    assert not embedded_status(data_dir)["running"]
    assert _wait_for(lambda: not psutil.pid_exists(postmaster) or _postgres_pids(data_dir) == [])
    assert _postgres_pids(data_dir) == []


def test_sigkilled_owner_is_pruned_and_the_last_leave_stops_the_server(
    data_dir: Path, procs: Procs
) -> None:
    owner = procs.spawn(OWNER)
    procs.report(owner)
    assert embedded_status(data_dir)["owners"] == [owner.pid]
    owner.send_signal(signal.SIGKILL)
    # Not reaped yet: a zombie must count as dead, as must a reused pid.
    assert _wait_for(lambda: psutil.Process(owner.pid).status() == psutil.STATUS_ZOMBIE)
    assert embedded_status(data_dir)["running"]  # nobody left to stop it

    server = EmbeddedServer(data_dir)
    server.join()
    assert not server.started_server  # a running server with a stale owner list is joined
    assert embedded_status(data_dir)["owners"] == [os.getpid()]
    server.leave()
    assert not embedded_status(data_dir)["running"]
    assert _wait_for(lambda: _postgres_pids(data_dir) == [])


def test_six_processes_joining_at_once_all_succeed_with_one_initdb(
    data_dir: Path, procs: Procs
) -> None:
    instant = time.time() + 1.5  # after every interpreter has started
    racers = [procs.spawn(RACER, str(instant)) for _ in range(6)]
    reports = [procs.report(p) for p in racers]
    assert {r["dsn"] for r in reports} == {embedded_dsn(data_dir)}
    assert sum(r["initdb"] for r in reports) == 1
    assert sum(r["started"] for r in reports) == 1
    status = embedded_status(data_dir)
    assert status["running"] and sorted(status["owners"]) == sorted(p.pid for p in racers)
    with psycopg.connect(embedded_dsn(data_dir)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    for proc in racers:
        procs.finish(proc)
    assert not embedded_status(data_dir)["running"]
    assert _wait_for(lambda: _postgres_pids(data_dir) == [])


@pytest.mark.parametrize("stale_pid", ["dead", "reused"])
def test_stale_postmaster_pid_does_not_stop_the_next_start(data_dir: Path, stale_pid: str) -> None:
    first = EmbeddedServer(data_dir)
    first.join()
    second = EmbeddedServer(data_dir)
    squatter = None
    try:
        postmaster = embedded_status(data_dir)["pid"]
        assert postmaster is not None
        os.kill(postmaster, signal.SIGKILL)
        assert _wait_for(lambda: not embedded_status(data_dir)["running"])
        pid_file = data_dir / "postmaster.pid"
        assert pid_file.exists()
        if stale_pid == "reused":
            # The dead postmaster's pid now belongs to an unrelated live process; PostgreSQL
            # alone would refuse to start ("Is another postmaster running?").
            squatter = subprocess.Popen(["sleep", "60"])
            lines = pid_file.read_text().splitlines(keepends=True)
            pid_file.write_text(f"{squatter.pid}\n" + "".join(lines[1:]))

        dsn = second.join()
        assert second.started_server
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert embedded_status(data_dir)["owners"] == [os.getpid()]
    finally:
        second.leave()
        first.leave()
        if squatter is not None:
            squatter.kill()
            squatter.wait()
    assert not embedded_status(data_dir)["running"]
    assert _wait_for(lambda: _postgres_pids(data_dir) == [])


def test_stop_embedded_stops_regardless_of_owners(data_dir: Path, procs: Procs) -> None:
    owner = procs.spawn(OWNER)
    procs.report(owner)
    assert stop_embedded(data_dir)
    status = embedded_status(data_dir)
    assert not status["running"] and status["owners"] == []
    assert not stop_embedded(data_dir)
    procs.finish(owner)  # its leave finds nothing to do and exits cleanly


def test_long_data_dir_gets_a_short_socket_dir() -> None:
    long_dir = Path("/var/tmp") / ("x" * 120) / "pg"
    dsn = embedded_dsn(long_dir)
    host = dsn.split("host=")[1].split("&")[0]
    assert host.startswith("/tmp/tenure-") and len(host) + len("/.s.PGSQL.5432") <= 107
    assert dsn == embedded_dsn(long_dir)
    assert embedded_dsn(Path("/var/tmp/short/pg")).startswith(
        "postgresql://postgres@/postgres?host=/var/tmp/short/pg&port="
    )


@pytest.mark.parametrize("below", ["pg", "sub/pg"])
def test_a_server_that_cannot_start_is_one_line_from_the_cli(data_dir: Path, below: str) -> None:
    # Given a TENURE_EMBEDDED_DIR under a regular file, where no server can be prepared
    blocker = data_dir.parent / "a-file"
    blocker.write_text("not a directory")
    env = {ENV_DIR: str(blocker / below), "TENURE_DATABASE_URL": None}
    for command in (["status"], ["db", "start"]):
        # When a command needs the embedded server
        result = tenure_cli(*command, env=env)
        # Then it exits non-zero with one line on stderr that says what to do
        assert result.returncode != 0, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        assert f"set {ENV_DIR} to a" in result.stderr, result.stderr
    # And the file is left as it was
    assert blocker.read_text() == "not a directory"


def test_the_embedded_servers_error_is_a_tenure_error(data_dir: Path) -> None:
    blocker = data_dir.parent / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(TenureError) as raised:
        EmbeddedServer(blocker / "pg").join()
    assert isinstance(raised.value, EmbeddedServerError)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_root_adopts_a_data_dir_whose_owner_uid_no_longer_exists(data_dir: Path) -> None:
    server = EmbeddedServer(data_dir)
    server.join()
    server.leave()
    orphan_uid = next(u for u in range(4242, 60000) if not _uid_exists(u))
    for root, dirs, files in os.walk(data_dir):
        for name in (root, *(os.path.join(root, f) for f in (*dirs, *files))):
            os.lchown(name, orphan_uid, -1)
    server = EmbeddedServer(data_dir)
    dsn = server.join()
    try:
        assert server.started_server
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        server.leave()


def _uid_exists(uid: int) -> bool:
    import pwd

    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
