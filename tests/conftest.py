"""Shared fixtures: a real PostgreSQL, a fresh schema per test, real worker processes.

The database is ``TENURE_TEST_DATABASE_URL`` when set, else the embedded server.
``TENURE_TEST_ROLE=owner|dml`` runs tenure's side of every test as a role that is not
a superuser (tests/privilege.py); ``admin_url`` stays the superuser's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from tenure import Registry
from tests import privilege

ROOT = Path(__file__).resolve().parent.parent
# What processes the tests start import: this checkout's code (not whichever one the
# virtual environment's editable install points at), and the test apps.
CHILD_PYTHONPATH = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
T = TypeVar("T")


POOLED = os.environ.get("TENURE_TEST_POOLER", "").lower() == "transaction"


def pytest_configure(config: pytest.Config) -> None:
    for tier, what in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: the tier of tests that {what}")
    config.addinivalue_line(
        "markers", "needs_superuser: does what only a superuser may (skipped in a role tier)"
    )
    config.addinivalue_line(
        "markers",
        "needs_owner: does what only the tables' owner may, such as VACUUM (skipped when "
        "TENURE_TEST_ROLE=dml)",
    )


#: The suite's tiers, by what a test needs; each runs alone (``pytest -m unit``).
TIERS = {
    "unit": "needs no database (the in-process fake store at most)",
    "database": "needs a real PostgreSQL, starts no worker process",
    "processes": "starts real worker processes and signals them",
    "faults": "injects faults into a fleet (chaos campaigns, clocks, networks)",
}
FAULT_MODULES = {"test_chaos", "test_hosts", "test_failover", "test_schedule_chaos"}
#: Fixtures that reach a database, and ones that start worker processes.
DATABASE_FIXTURES = {"admin_url", "database_url", "data_dir"}
PROCESS_FIXTURES = {"workers"}


def tier_of(item: pytest.Item) -> str:
    """The tier of a test: one it names with a tier's marker (a parameter that reaches
    the database lazily does), faults by module, else by the fixtures it uses and the
    ``acceptance`` marker (real worker processes)."""
    named = [tier for tier in TIERS if item.get_closest_marker(tier)]
    if named:
        return named[-1]
    module = getattr(item, "module", None)
    if module is not None and module.__name__.rpartition(".")[2] in FAULT_MODULES:
        return "faults"
    names = set(getattr(item, "fixturenames", ()))
    if names & PROCESS_FIXTURES or item.get_closest_marker("acceptance"):
        return "processes"
    if names & DATABASE_FIXTURES:
        return "database"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(getattr(pytest.mark, tier_of(item)))
    skips: dict[str, pytest.MarkDecorator] = {}
    if POOLED:
        skips["needs_session"] = pytest.mark.skip(
            reason="needs LISTEN/NOTIFY or session state, which a pooler in transaction mode "
            "does not carry"
        )
    if privilege.MODE:
        skips["needs_superuser"] = pytest.mark.skip(
            reason=f"needs a superuser; TENURE_TEST_ROLE={privilege.MODE} runs as a plain role"
        )
    if privilege.MODE == "dml":
        skips["needs_owner"] = pytest.mark.skip(
            reason="needs the tables' owner; TENURE_TEST_ROLE=dml runs with DML grants only"
        )
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def admin_url() -> str:
    """The test database as its superuser, straight to it (never through a pooler)."""
    url = os.environ.get("TENURE_TEST_DATABASE_URL")
    if not url:
        from tenure.embedded import ensure_embedded

        url = ensure_embedded()
    return url


@pytest.fixture(name="data_dir")
def private_embedded_dir() -> Iterator[Path]:
    """The data dir of an embedded server of this test's own (TENURE_EMBEDDED_DIR), never
    the default one other tests share; its server is stopped at the end, even on failure.

    Not under pytest's tmp_path: as root the server runs as another user, who must
    traverse every parent, and /tmp/pytest-of-root is 0700."""
    from tenure.embedded import stop_embedded
    from tenure.embedded.procfs import postgres_processes

    base = Path(tempfile.mkdtemp(prefix="tenure-embedded-"))
    base.chmod(0o755)
    path = base / "pg"
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):
            stop_embedded(path)
        for pid in postgres_processes(path):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def roles(admin_url: str) -> Iterator[privilege.Roles | None]:
    """The least-privilege roles of ``TENURE_TEST_ROLE``, or None (tests run as admin)."""
    if not privilege.MODE:
        yield None
        return
    if POOLED:
        raise pytest.UsageError("TENURE_TEST_ROLE and TENURE_TEST_POOLER: use one at a time")
    made = privilege.Roles(admin_url, privilege.MODE)
    try:
        yield made
    finally:
        made.drop()


@pytest.fixture(scope="session")
def database_url(admin_url: str, roles: privilege.Roles | None) -> Iterator[str]:
    """The DSN tenure's code under test runs with: the admin's, or a role tier's."""
    url = roles.url if roles else admin_url
    if not POOLED:
        yield url
        return
    # Every connection of the suite goes through a PgBouncer in transaction mode.
    from chaos.pgbouncer import PgBouncer

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
def new_schema(admin_url: str, roles: privilege.Roles | None) -> Iterator[Callable[[str], str]]:
    """``new_schema(name)`` names a schema the test makes, dropped at its end; in a role
    tier it is made for the owner first (and, when TENURE_TEST_ROLE=dml, migrated)."""
    made: list[str] = []

    def make(name: str) -> str:
        made.append(name)
        if roles:
            roles.make_schema(name)
        return name

    yield make
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def schema(new_schema: Callable[[str], str]) -> str:
    """A fresh schema name for the test: tenure creates it at the first migration (in a
    role tier it exists already, as docs/deployment.md says to make it)."""
    return new_schema(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def db(
    database_url: str, schema: str, roles: privilege.Roles | None
) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection straight to the database (never through a test pooler),
    with the test schema first on the search path: the tests' own eyes. In a role
    tier they are the schema owner's."""
    eyes = roles.owner_url if roles else direct_url(database_url)
    with psycopg.connect(eyes, autocommit=True) as conn:
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


def task_in(db: psycopg.Connection[Any], state: str, *, queue: str = "work") -> int:
    """The id of a new task row in ``state``, written as the worker's statements leave
    one (no worker needed): waiting or running in ``tasks``, ended in
    ``finished_tasks`` after one attempt. ``db`` has the test schema on its path."""
    if state in ("scheduled", "queued", "running"):
        running = state == "running"
        row = db.execute(
            """
            INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes, state,
                               attempt, lease_owner, lease_expires_at, started_at, run_after)
            VALUES ('made.in_a_state', %(queue)s, '{}', 5, 3, %(state)s, %(attempt)s,
                    CASE WHEN %(running)s THEN gen_random_uuid() END,
                    CASE WHEN %(running)s THEN now() + interval '1 hour' END,
                    CASE WHEN %(running)s THEN now() END,
                    now() + %(delay)s::interval)
            RETURNING id""",
            {
                "queue": queue,
                "state": state,
                "attempt": int(running),
                "running": running,
                "delay": "1 hour" if state == "scheduled" else "0",
            },
        ).fetchone()
    else:
        row = db.execute(
            """
            INSERT INTO finished_tasks (id, task_name, queue, payload, priority, state,
                                        attempt, errors, crashes, created_at, last_error,
                                        max_attempts, max_crashes)
            VALUES (nextval('task_ids'), 'made.in_a_state', %(queue)s, '{}', 0, %(state)s, 1,
                    CASE WHEN %(state)s = 'failed' THEN 1 ELSE 0 END, 0, now(),
                    CASE WHEN %(state)s = 'succeeded' THEN NULL ELSE 'made so' END, 5, 3)
            RETURNING id""",
            {"state": state, "queue": queue},
        ).fetchone()
    assert row is not None
    return int(row[0])


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


def load_app(module: str, schema: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A test app module (``tests.apps.*``), imported afresh in this process against
    the test schema; close its ``reg.client`` when done."""
    import importlib

    monkeypatch.setenv("TENURE_TEST_SCHEMA", schema)
    monkeypatch.setenv("TENURE_DATABASE_URL", database_url)
    return importlib.reload(importlib.import_module(module))


@pytest.fixture
def fleet_app(schema: str, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Any]:
    """The test app module, imported in this process against the test schema."""
    fleet = load_app("tests.apps.fleet", schema, database_url, monkeypatch)
    yield fleet
    fleet.reg.client.close()


@pytest.fixture
def hostile(schema: str, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[Any]:
    """``tests.apps.hostile``: tasks whose outcomes are hard to write."""
    app = load_app("tests.apps.hostile", schema, database_url, monkeypatch)
    yield app
    app.reg.client.close()


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


@pytest.fixture
def operator_cli(database_url: str, schema: str) -> Callable[..., str]:
    """``operator_cli(*args, code=0)``: a ``tenure`` command on the test schema, run in
    this process (click's runner); its output, once its exit code is ``code``."""
    from click.testing import CliRunner

    from tenure.cli import main

    runner = CliRunner(env={"COLUMNS": "200"})

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, [*args, "--dsn", database_url, "--schema", schema])
        assert result.exit_code == code, (result.output, result.exception)
        return result.output

    return invoke


@pytest.fixture
def noop(registry: Registry) -> Any:
    @registry.task(name="noop")
    def noop(payload: dict) -> None: ...

    return noop
