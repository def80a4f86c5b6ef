"""The embedded server's lifecycle, as a user drives it: real ``tenure`` processes, real
signals, real servers; no mocks.

Each test has its own data dir (TENURE_EMBEDDED_DIR), never the default one other tests
share, and stops its server at the end, even on failure. The data dirs are not under
pytest's tmp_path: as root the server runs as another user, who must traverse every
parent, and /tmp/pytest-of-root is 0700.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from tenure.embedded import ENV_DIR, PG_MAJOR, EmbeddedServer, embedded_dsn, embedded_status
from tenure.embedded.binaries import cache_dir, install, wheel_dir
from tests.conftest import CHILD_PYTHONPATH, ROOT, eventually, tenure_cli
from tests.test_embedded import _postgres_pids

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and signals")

# A process that joins the server (leaving through atexit), says so, then sleeps.
OWNER = """
import json, sys, time
from tenure.embedded import ensure_embedded
print(json.dumps({"dsn": ensure_embedded()}), flush=True)
time.sleep(3600)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tenure:
    """``tenure`` commands and owner processes on one private data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        env = {**os.environ, ENV_DIR: str(data_dir), "PYTHONPATH": CHILD_PYTHONPATH}
        env.pop("TENURE_DATABASE_URL", None)
        self.env = env
        self.procs: list[subprocess.Popen[str]] = []

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return tenure_cli(*args, env={ENV_DIR: str(self.data_dir), "TENURE_DATABASE_URL": None})

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def spawn(self, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self.procs.append(proc)
        return proc

    def owner(self) -> subprocess.Popen[str]:
        """A process using the server, once it has joined."""
        proc = self.spawn(sys.executable, "-c", OWNER)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.wait(30) or (proc.stderr.read() if proc.stderr else "")
        assert json.loads(line)["dsn"] == embedded_dsn(self.data_dir)
        return proc

    def dashboard(self) -> subprocess.Popen[str]:
        """A ``tenure dashboard`` on a free loopback port, once it listens."""
        port = _free_port()
        proc = self.spawn(sys.executable, "-m", "tenure", "dashboard", "--port", str(port))

        def listening() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        eventually(listening, timeout=60, what="the dashboard listening")
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def tenure(data_dir: Path) -> Iterator[Tenure]:
    t = Tenure(data_dir)
    try:
        yield t
    finally:
        t.close()


def _owners_file(data_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(data_dir.with_name(f"{data_dir.name}.owners").read_text())
    return data


def _stray_files(data_dir: Path) -> list[str]:
    return sorted(
        str(p)
        for where in (data_dir.parent, data_dir)
        if where.is_dir()
        for p in where.iterdir()
        if p.name.endswith(".tmp") or ".initdb-" in p.name
    )


# -- owners exiting every way ------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_dashboard_exits_0_and_stops_the_server_it_last_owned(
    tenure: Tenure, data_dir: Path, sig: signal.Signals
) -> None:
    # Given a migrated schema and a dashboard, the only process using the embedded server
    tenure.ok("db", "migrate")
    dashboard = tenure.dashboard()
    status = embedded_status(data_dir)
    assert status["running"] and status["owners"] == [dashboard.pid]
    postmaster = status["pid"]
    assert postmaster is not None
    # When it is told to stop
    dashboard.send_signal(sig)
    # Then it exits cleanly, leaving the server, which stops with it
    assert dashboard.wait(60) == 0, dashboard.stderr.read() if dashboard.stderr else ""
    assert not embedded_status(data_dir)["running"]
    assert not psutil.pid_exists(postmaster) or _postgres_pids(data_dir) == []
    eventually(lambda: _postgres_pids(data_dir) == [], what="no postgres left")
    assert _owners_file(data_dir)["owners"] == []


@pytest.mark.parametrize("next_command", [["db", "status"], ["db", "url"]])
def test_the_next_command_stops_a_server_whose_last_owner_was_sigkilled(
    tenure: Tenure, data_dir: Path, next_command: list[str]
) -> None:
    # Given a dashboard that was the server's only user, killed so it could not leave
    tenure.ok("db", "migrate")
    dashboard = tenure.dashboard()
    dashboard.send_signal(signal.SIGKILL)
    dashboard.wait(30)
    status = embedded_status(data_dir)
    assert status["running"] and status["owners"] == []  # the dead pid does not count
    assert [o["pid"] for o in _owners_file(data_dir)["owners"]] == [dashboard.pid]
    # When the next command looks at the server
    result = tenure.run(*next_command)
    # Then it finds the dead owner, forgets it, stops the server, and tells the truth
    assert "every process using it had died" in result.stderr, result.stderr
    assert not embedded_status(data_dir)["running"]
    eventually(lambda: _postgres_pids(data_dir) == [], what="no postgres left")
    assert _owners_file(data_dir)["owners"] == []
    if next_command == ["db", "url"]:
        assert result.returncode == 1 and result.stdout == ""
    else:
        assert result.returncode == 0 and "embedded server: not running" in result.stdout


def test_a_sigkilled_owner_beside_a_live_one_leaves_the_server_running(
    tenure: Tenure, data_dir: Path
) -> None:
    # Given two processes using the server, one of them killed
    killed, alive = tenure.owner(), tenure.owner()
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    # When a command looks, the server keeps running for the live one, which alone is listed
    out = tenure.ok("db", "status")
    assert f"used by 1 process(es): {alive.pid}" in out
    assert embedded_status(data_dir)["running"]
    assert [o["pid"] for o in _owners_file(data_dir)["owners"]] == [alive.pid]
    # And it stops when that one is killed too and someone looks again
    alive.send_signal(signal.SIGKILL)
    alive.wait(30)
    assert "not running" in tenure.ok("db", "status")
    eventually(lambda: _postgres_pids(data_dir) == [], what="no postgres left")


# -- db start / url / status / stop ------------------------------------------------------


def test_db_start_url_status_stop_tell_the_truth(tenure: Tenure, data_dir: Path) -> None:
    # Given no server: status says so, url refuses and says how to start one
    assert tenure.ok("db", "status").startswith("embedded server: not running")
    url = tenure.run("db", "url")
    assert url.returncode == 1 and url.stdout == ""
    assert url.stderr.count("\n") == 1 and "tenure db start" in url.stderr
    assert tenure.ok("db", "stop") == "no embedded server was running\n"

    # When `tenure db start` runs, the server outlives the command
    started = tenure.ok("db", "start")
    assert started.startswith("embedded server started (pid ")
    status = embedded_status(data_dir)
    assert status["running"] and status["pinned"] and status["owners"] == []
    pid = status["pid"]
    assert f"(pid {pid})" in started
    assert tenure.ok("db", "start").startswith(f"embedded server already running (pid {pid})")

    # Then its url works with psql (or psycopg where psql is missing)
    dsn = tenure.ok("db", "url").strip()
    assert dsn == embedded_dsn(data_dir)
    psql = shutil.which("psql")
    if psql:
        done = subprocess.run(
            [psql, dsn, "-XAtc", "select 1"], capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr
    else:
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    out = tenure.ok("db", "status")
    assert f"running (pid {pid}), pinned by `tenure db start`" in out
    assert f"dsn: {dsn}" in out and f"data dir: {data_dir}\n" in out

    # And a process using it comes and goes without stopping a pinned server
    owner = tenure.owner()
    status_json = json.loads(tenure.ok("db", "status", "--json"))
    assert status_json["running"] and status_json["pid"] == pid
    assert status_json["pinned"] and status_json["owners"] == [owner.pid]
    # `db stop` refuses while it is in use, changing nothing
    refused = tenure.run("db", "stop")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert str(owner.pid) in refused.stderr and "--force" in refused.stderr
    assert embedded_status(data_dir)["pid"] == pid and embedded_status(data_dir)["pinned"]
    owner.send_signal(signal.SIGINT)  # KeyboardInterrupt: atexit leaves
    owner.wait(30)
    assert embedded_status(data_dir)["pid"] == pid

    # `db stop` then stops it and says so, once
    assert tenure.ok("db", "stop") == "embedded server stopped\n"
    assert not embedded_status(data_dir)["running"]
    assert tenure.ok("db", "stop") == "no embedded server was running\n"
    assert tenure.run("db", "url").returncode == 1
    eventually(lambda: _postgres_pids(data_dir) == [], what="no postgres left")


def test_db_stop_force_stops_a_server_in_use_and_names_its_users(
    tenure: Tenure, data_dir: Path
) -> None:
    owner = tenure.owner()
    result = tenure.run("db", "stop", "--force")
    assert result.returncode == 0 and result.stdout == "embedded server stopped\n"
    assert str(owner.pid) in result.stderr
    assert not embedded_status(data_dir)["running"]
    assert _owners_file(data_dir) == {"pinned": False, "owners": []}


# -- no stray files ----------------------------------------------------------------------


def test_no_temporary_files_remain_after_many_starts_and_stops(
    tenure: Tenure, data_dir: Path
) -> None:
    # Given what a writer killed between writing and renaming the owners file leaves
    data_dir.parent.mkdir(exist_ok=True)
    leftover = data_dir.with_name(f".{data_dir.name}.owners.999999999.tmp")
    leftover.write_text("{}")
    # When the server starts and stops many times, through every path
    for cycle in range(4):
        if cycle % 2:
            tenure.ok("db", "start")
            owner = tenure.owner()
            owner.send_signal(signal.SIGKILL)
            owner.wait(30)
            tenure.ok("db", "stop")
        else:
            owner = tenure.owner()
            server = EmbeddedServer(data_dir)
            server.join()
            owner.send_signal(signal.SIGTERM)  # a program that leaves SIGTERM's default
            owner.wait(30)
            server.leave()  # the last live owner: stops the server
        assert not embedded_status(data_dir)["running"]
        tenure.ok("db", "status")
    # Then no temporary file is left anywhere next to or in the data dir
    assert _stray_files(data_dir) == []
    assert _owners_file(data_dir) == {"pinned": False, "owners": []}


# -- one copy of the binaries ------------------------------------------------------------

INSTALLER = """
import json, sys, time
from pathlib import Path
from tenure.embedded.binaries import install
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
print(json.dumps(str(install(Path(sys.argv[1]), Path(sys.argv[2])))), flush=True)
"""


def _venv_like(base: Path, name: str) -> Path:
    """A site-packages holding the wheel's files (hard links), as another virtualenv would."""
    real = wheel_dir()
    site = base / name / "site-packages"
    pkg = site / real.name
    shutil.copytree(
        real / f"pginstall{PG_MAJOR}",
        pkg / f"pginstall{PG_MAJOR}",
        symlinks=True,
        copy_function=os.link,
        ignore=shutil.ignore_patterns("include"),
    )
    libs = real.parent / f"{real.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True, copy_function=os.link)
    return pkg


def test_two_virtualenvs_installing_at_once_share_one_copy(data_dir: Path) -> None:
    base = data_dir.parent
    cache = base / "cache"
    venvs = [_venv_like(base, "venv-a"), _venv_like(base, "venv-b")]
    cache.mkdir(mode=0o755)
    (cache / f".pginstall{PG_MAJOR}-0-feedface.999999999-x").mkdir()  # a killed installer's
    # When four processes, two per virtualenv, install the binaries at the same instant
    instant = str(time.time() + 2.0)
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INSTALLER, str(venv), str(cache), instant],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for venv in venvs * 2
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    bindirs = {json.loads(out) for out in outs}
    # Then they all use one copy, the only thing in the cache, and it runs
    assert len(bindirs) == 1
    assert [p.name for p in cache.iterdir()] == [Path(*bindirs).parents[2].name]
    version = subprocess.run(
        [str(Path(*bindirs) / "postgres"), "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and f"PostgreSQL) {PG_MAJOR}." in version.stdout
    # And a virtualenv whose build differs gets a copy of its own
    share = venvs[1] / f"pginstall{PG_MAJOR}" / "share"
    sample = next(p for p in sorted(share.rglob("*")) if p.is_file() and not p.is_symlink())
    text = sample.read_bytes()
    sample.unlink()  # break the hard link: venv-a keeps its file
    sample.write_bytes(text + b"\n")
    other = install(venvs[1], cache)
    assert str(other) not in bindirs and len(list(cache.iterdir())) == 2


def test_the_server_runs_from_the_shared_copy(tenure: Tenure, data_dir: Path) -> None:
    tenure.ok("db", "start")
    pid = embedded_status(data_dir)["pid"]
    assert pid is not None
    exe = Path(os.readlink(f"/proc/{pid}/exe"))
    assert exe.is_relative_to(cache_dir()), exe
    assert not exe.is_relative_to(wheel_dir())
