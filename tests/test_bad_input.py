"""Bad input: each case is one clear line, and nothing already accepted is lost."""

from __future__ import annotations

import signal
from typing import Any

import psycopg
import pytest

from tests.conftest import eventually, tenure_cli


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["worker", "tests.apps.fleet:reg", "--concurrency", "0"], "concurrency: must be between"),
        (["worker", "tests.apps.fleet:reg", "--lease", "fifteen"], "is not a duration"),
        (["worker", "tests.apps.fleet:reg", "--lease", "10ms"], "lease: must be at least"),
        (["worker", "tests.apps.fleet:reg", "--drain-timeout", "1x"], "is not a duration"),
        (["worker", "no_such_module:reg"], "cannot import 'no_such_module'"),
        (["worker", "tests.apps.fleet"], "should look like myapp.tasks:reg"),
        (["worker", "tests.apps.fleet:sleepy"], "is not a tenure Registry"),
    ],
)
def test_bad_flags_are_one_line_errors(args: list[str], expected: str) -> None:
    result = tenure_cli(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


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
