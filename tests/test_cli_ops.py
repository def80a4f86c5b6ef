"""Operator commands: tasks, queues, workers and prune, on a real database."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest

from tenure.cli import run
from tests.conftest import eventually, task_in, worker_id_of

pytestmark = pytest.mark.acceptance


@pytest.fixture
def cli(operator_cli: Any, fleet_app: Any) -> Any:
    fleet_app.reg.client.open()  # operator commands never create the schema: migrate it
    return operator_cli


def test_tasks_list_filters_and_show_prints_payload_and_attempts(
    cli: Any, fleet_app: Any, workers: Any
) -> None:
    done = fleet_app.sleepy.send({"s": 0, "note": "shown in full"}, partition_key="tenant-x")
    failing = fleet_app.always_fails.send({"why": "cli test"})
    waiting = fleet_app.sleepy.send({"s": 0}, delay=3600)
    workers("--lease", "3s")
    eventually(lambda: done.state() == "succeeded" and failing.state() == "failed", timeout=30)

    def listed(*args: str) -> list[int]:
        return [t["id"] for t in json.loads(cli("tasks", "list", *args, "--json"))["tasks"]]

    assert listed() == [waiting.id, failing.id, done.id]  # newest first
    assert listed("--state", "failed") == [failing.id]
    assert listed("--key", "tenant-x") == [done.id]
    assert "always fails: cli test" in cli("tasks", "list", "--state", "failed")
    shown = cli("tasks", "show", str(failing.id))
    assert '"why": "cli test"' in shown
    assert "Traceback" in shown  # the last error in full
    doc = json.loads(cli("tasks", "show", str(failing.id), "--json"))
    assert (doc["task"]["state"], doc["task"]["payload"]) == ("failed", {"why": "cli test"})
    # three attempts, each ended in error
    assert [(a["attempt"], a["outcome"]) for a in doc["attempts"]] == [
        (1, "error"),
        (2, "error"),
        (3, "error"),
    ]
    assert all("always fails: cli test" in a["error"] for a in doc["attempts"])
    cli("tasks", "list", "--state", "bogus", code=2)


def test_tasks_cancel_and_retry(cli: Any, fleet_app: Any) -> None:
    handle = fleet_app.sleepy.send({"s": 0})
    assert f"task {handle.id} cancelled" in cli("tasks", "cancel", str(handle.id))
    assert handle.state() == "cancelled"
    assert f"task {handle.id} cancelled" in cli("tasks", "cancel", str(handle.id))  # idempotent
    assert f"task {handle.id} queued again" in cli("tasks", "retry", str(handle.id))
    assert handle.state() == "queued"
    assert "only failed, quarantined or cancelled" in cli("tasks", "retry", str(handle.id), code=1)


@pytest.mark.parametrize("state", ["queued", "succeeded", "failed"])
def test_tasks_retry_says_whether_it_queued_the_task(
    cli: Any, db: psycopg.Connection[Any], state: str
) -> None:
    # Given a task in this state
    task_id = task_in(db, state)
    # When an operator retries it
    if state == "failed":
        # Then a failed one is queued again, and only then does the command say so
        assert cli("tasks", "retry", str(task_id)) == f"task {task_id} queued again\n"
    else:
        # Then any other is left alone, and the one line says why (exit code 1)
        said = cli("tasks", "retry", str(task_id), code=1)
        assert "queued again" not in said
        assert (
            f"task {task_id} is {state}, so nothing was done; only failed, quarantined or "
            "cancelled tasks can be retried"
        ) in said
    shown = json.loads(cli("tasks", "show", str(task_id), "--json"))["task"]
    assert shown["state"] == ("queued" if state == "failed" else state)


def test_queues_pause_and_resume(cli: Any, db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO queues (name) VALUES ('work')")  # as a worker publishes it
    assert "queue work paused" in cli("queues", "pause", "work")
    assert db.execute("SELECT paused FROM queues WHERE name = 'work'").fetchone() == (True,)
    assert "queue work resumed" in cli("queues", "resume", "work")
    assert db.execute("SELECT paused FROM queues WHERE name = 'work'").fetchone() == (False,)


def test_workers_list_and_drain_by_id_prefix(
    cli: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    w = workers("--lease", "3s")
    wid = str(worker_id_of(db, w.pid))
    listed = cli("workers", "list")
    assert wid in listed and str(w.pid) in listed and "active" in listed
    out = cli("workers", "drain", wid[:8])
    assert f"worker {wid} asked to drain" in out
    assert w.wait(30) == 0  # it drained and exited on its own
    assert wid not in cli("workers", "list")
    assert wid in cli("workers", "list", "--all")
    assert "no live worker" in cli("workers", "drain", wid[:8], code=1)


def test_prune_older_than(cli: Any, fleet_app: Any, db: psycopg.Connection[Any]) -> None:
    fleet_app.sleepy.send({})
    db.execute("""
        INSERT INTO finished_tasks (id, task_name, queue, payload, priority, state, attempt,
                                    errors, crashes, created_at, finished_at)
        SELECT -g, 'x', 'work', '{}', 0, 'succeeded', 1, 0, 0, now() - interval '9 days',
               now() - CASE WHEN g <= 7 THEN interval '8 days' ELSE interval '1 day' END
        FROM generate_series(1, 10) g""")
    assert "pruned 7 finished tasks in 1 batch of at most 1000" in cli(
        "prune", "--older-than", "7d"
    )
    assert db.execute("SELECT count(*) FROM finished_tasks").fetchone() == (3,)
    cli("prune", "--older-than", "soon", code=2)


def test_status_estimates_counts_above_the_cap_and_says_so(
    cli: Any, fleet_app: Any, db: psycopg.Connection[Any]
) -> None:
    # Given 300 queued tasks and 40 failed ones in queue "work", with fresh statistics
    fleet_app.sleepy.send_many([{"s": 0}] * 300)
    db.execute("""
        INSERT INTO finished_tasks (id, task_name, queue, payload, priority, state, attempt,
                                    errors, crashes, created_at, finished_at)
        SELECT -g, 'x', CASE WHEN g <= 40 THEN 'work' ELSE 'only-failures' END, '{}', 0,
               'failed', 1, 1, 0, now(), now()
        FROM generate_series(1, 42) g""")
    db.execute("ANALYZE tasks")
    db.execute("ANALYZE finished_tasks")

    # When status counts exactly up to its default cap, Then every count is exact
    queues = {q["queue"]: q for q in json.loads(cli("status", "--json"))["queues"]}
    assert (queues["work"]["queued"], queues["work"]["failed"]) == (300, 40)
    # And a queue that holds nothing but failures is found too (by its index, not a scan)
    assert queues["only-failures"]["failed"] == 2
    assert not any(q["queued_estimated"] or q["finished_estimated"] for q in queues.values())
    # And the table marks nothing as an estimate
    exact = cli("status")
    assert "~" not in exact

    # When the cap is below both counts, Then both are the planner's estimates, flagged
    capped = json.loads(cli("status", "--count-cap", "25", "--json"))["queues"]
    (work,) = [q for q in capped if q["queue"] == "work"]
    assert work["queued_estimated"] and work["finished_estimated"]
    assert 250 <= work["queued"] <= 360, work  # ANALYZE saw every row: close to the truth
    assert 30 <= work["failed"] <= 50, work
    # And the table marks them ~, the oldest age as a lower bound, and says what ~ means
    table = cli("status", "--count-cap", "25")
    row = next(line for line in table.splitlines() if " work " in line)
    assert re.findall(r"~(\d+)", row)[:2] == [str(work["queued"]), str(work["failed"])]
    assert "≥" in row
    assert "~ estimate: more than 25 tasks" in table


def test_status_ranks_keys_from_a_sample_when_the_table_is_deep(
    fleet_app: Any, db: psycopg.Connection[Any]
) -> None:
    # Given a backlog of one big and one small partition key
    fleet_app.sleepy.send_many([{"s": 0}] * 2000, partition_key="big")
    fleet_app.sleepy.send_many([{"s": 0}] * 5, partition_key="small")
    client = fleet_app.reg.client
    # When the table counts as small, Then every key count is exact
    exact = client.key_counts(10)
    assert [(k.key, k.queued, k.estimated) for k in exact] == [
        ("big", 2000, False),
        ("small", 5, False),
    ]
    # When it counts as deep (any size over 0 bytes), Then the counts come from a page
    # sample, scaled up, and are flagged as estimates (a half sample: about half the
    # pages, each count doubled)
    whole = client.key_counts(10, exact_bytes=0, sample_percent=100)
    assert [(k.key, k.queued, k.estimated) for k in whole] == [
        ("big", 2000, True),
        ("small", 5, True),
    ]
    half = client.key_counts(10, exact_bytes=0, sample_percent=50)
    assert all(k.estimated and k.queued % 2 == 0 for k in half)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tasks", "show", "987654321"], "error: no task with id 987654321"),
        (["tasks", "retry", "0"], "error: Invalid value for 'TASK_ID'"),
        (["prune", "--older-than", "7 parsecs"], "is not a duration"),
    ],
)
def test_operator_mistakes_end_in_one_line(
    args: list[str],
    message: str,
    database_url: str,
    schema: str,
    fleet_app: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fleet_app.reg.client.open()  # migrated, as operator commands need
    with pytest.raises(SystemExit) as exited:
        run([*args, "--dsn", database_url, "--schema", schema])
    assert exited.value.code in (1, 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_worker_http_port_in_use_is_one_line(workers: Any) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        w = workers("--metrics-port", str(port))
        assert w.wait(60) == 1
    lines = [line for line in w.log().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cannot serve metrics/health" in lines[0], w.log()
