"""Shared fixtures: a real PostgreSQL, a fresh schema per test, real worker processes.

The database is ``TENURE_TEST_DATABASE_URL`` when set, else the embedded server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from tenure import Registry

ROOT = Path(__file__).resolve().parent.parent
# Child processes import tenure from this checkout's src (not an install elsewhere)
# and the test apps from the repository root.
CHILD_PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
T = TypeVar("T")


POOLED = os.environ.get("TENURE_TEST_POOLER", "").lower() == "transaction"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not POOLED:
        return
    skip = pytest.mark.skip(
        reason="needs LISTEN/NOTIFY or session state, which a pooler in transaction mode "
        "does not carry"
    )
    for item in items:
        if "needs_session" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("TENURE_TEST_DATABASE_URL")
    if not url:
        from tenure._db.embedded import ensure_embedded

        url = ensure_embedded()
    if not POOLED:
        yield url
        return
    # Every connection of the suite goes through a PgBouncer in transaction mode.
    from tests.pooler import PgBouncer

    os.environ["TENURE_POOLER"] = "transaction"
    os.environ["TENURE_TEST_DIRECT_URL"] = url
    bouncer = PgBouncer(url)
    os.environ["TENURE_TEST_POOLED_URL"] = bouncer.dsn
    try:
        yield bouncer.dsn
    finally:
        bouncer.stop()


def direct_url(database_url: str) -> str:
    """The database itself, bypassing a test pooler: for the tests' own inspection."""
    return os.environ.get("TENURE_TEST_DIRECT_URL", database_url) if POOLED else database_url


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(direct_url(database_url), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def db(database_url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection straight to the database (never through a test pooler),
    with the test schema first on the search path: the tests' own eyes."""
    with psycopg.connect(direct_url(database_url), autocommit=True) as conn:
        conn.execute(f"SET search_path = {schema}, public")
        yield conn


@pytest.fixture
def registry(database_url: str, schema: str) -> Iterator[Registry]:
    reg = Registry(database_url, schema=schema)
    yield reg
    reg.client.close()


def eventually(
    check: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout}s: {what or check} (last: {last!r})")


class WorkerProcess:
    """A real ``tenure worker`` process for the test app, killed with real signals."""

    def __init__(
        self,
        database_url: str,
        schema: str,
        log_dir: Path,
        *args: str,
        app: str = "tests.apps.fleet:reg",
        prefix: Sequence[str] = (),
    ) -> None:
        self.log_path = log_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
        env = {
            **os.environ,
            "TENURE_DATABASE_URL": database_url,
            "TENURE_TEST_SCHEMA": schema,
            "PYTHONPATH": CHILD_PYTHONPATH,
        }
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tenure", "worker", app, *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def workers(
    database_url: str, schema: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes with ``workers("--lease", "2s", ...)``; all stopped at the end.

    ``dsn`` replaces the test database's URL and ``prefix`` wraps the command (a worker
    on another host: ``prefix=namespace.command([])``)."""
    started: list[WorkerProcess] = []

    def start(
        *args: str,
        app: str = "tests.apps.fleet:reg",
        dsn: str | None = None,
        prefix: Sequence[str] = (),
    ) -> WorkerProcess:
        if POOLED:
            args = (*args, "--poll-only", "--poll-interval", "200ms")
        w = WorkerProcess(dsn or database_url, schema, tmp_path, *args, app=app, prefix=prefix)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def fleet_app(schema: str, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Any]:
    """The test app module, imported in this process against the test schema."""
    import importlib

    monkeypatch.setenv("TENURE_TEST_SCHEMA", schema)
    monkeypatch.setenv("TENURE_DATABASE_URL", database_url)
    import tests.apps.fleet as fleet

    fleet = importlib.reload(fleet)
    yield fleet
    fleet.reg.client.close()


def worker_id_of(db: psycopg.Connection[Any], pid: int) -> uuid.UUID:
    """The id of the live worker row that process ``pid`` registered."""

    def lookup() -> tuple[Any, ...] | None:
        try:
            return db.execute(
                "SELECT id FROM workers WHERE pid = %s AND state <> 'gone'", (pid,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:  # the worker has not migrated yet
            return None

    row = eventually(lookup, what=f"worker row for pid {pid}")
    return row[0]


def tenure_cli(
    *args: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tenure ARGS`` from the repository, wide enough for its tables.
    ``env`` adds variables to this process's; a None value removes one."""
    merged = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tenure", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in merged.items() if v is not None},
    )
