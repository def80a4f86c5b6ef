"""One schema story: the README's commands, in its order, find the work of the app.

The documents app keeps its tasks in its own schema (``TENURE_DOCS_SCHEMA``); the
operator commands reach it with ``--app``, ``TENURE_SCHEMA`` or ``--schema``, and a
schema that holds no tenure tables is refused with a line naming those that do.
Also here: tables that fit 80 columns, ``--json``, and what a task's "last error" and
a dead worker's counts show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from examples.documents import corpus
from tenure import Registry
from tenure._cli.output import Column, console, fit_table
from tenure._cli.workers import worker_cells
from tenure.dashboard import views
from tests.conftest import CHILD_PYTHONPATH, ROOT, eventually, tenure_cli, worker_id_of
from tests.test_dashboard import Dashboard

APP = "examples.documents.app:reg"
TENURE_DOCS = [sys.executable, "-m", "examples.documents.cli"]


def docs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TENURE_DOCS, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def fits(output: str, width: int = 80) -> None:
    """No line wider than the terminal, and no header cut short."""
    for line in output.splitlines():
        assert len(line) <= width, line
        if line.startswith("┃"):
            assert "…" not in line, line


@pytest.fixture
def docs_schema(
    new_schema: Callable[[str], str], monkeypatch: pytest.MonkeyPatch, database_url: str
) -> str:
    """A fresh schema for the documents app (and its index beside it)."""
    name = new_schema(f"d_{uuid.uuid4().hex[:10]}")
    new_schema(f"{name}_index")
    monkeypatch.setenv("TENURE_DOCS_SCHEMA", name)
    monkeypatch.setenv("TENURE_DATABASE_URL", database_url)
    monkeypatch.delenv("TENURE_SCHEMA", raising=False)
    return name


@pytest.mark.acceptance
def test_the_readme_commands_in_order_show_the_documents_fleets_work(
    docs_schema: str, database_url: str, workers: Any, tmp_path: Path, db: Any
) -> None:
    env = {"TENURE_DOCS_SCHEMA": docs_schema, "TENURE_DATABASE_URL": database_url}
    ok(docs("generate", str(tmp_path / "corpus"), "--count", "40", "--seed", "5", env=env))
    manifest = corpus.Manifest.load(tmp_path / "corpus")
    # The README: the fleet, then ingest and wait, search, failed, then the operator view
    workers("--processes", "2", "--concurrency", "2", app=APP)
    ingested = ok(docs("ingest", str(tmp_path / "corpus"), "--wait", env=env))
    assert f"tenure schema {docs_schema}; see it with: tenure status --schema {docs_schema}" in (
        ingested
    )
    phrase, where = next(iter(manifest.planted.items()))
    hits = [json.loads(line) for line in ok(docs("search", phrase, "--json", env=env)).split("\n")
            if line]  # fmt: skip
    assert hits[0]["path"] == where and hits[0]["relative"] == 1.0
    assert hits[0]["rank"] > 0
    failed = json.loads(ok(docs("failed", "--json", env=env)))
    assert failed["schema"] == docs_schema
    assert sorted(f["path"] for f in failed["failed"]) == sorted(manifest.corrupt)
    assert sum(failed["states"].values()) == len(manifest.files)

    # `tenure status --app examples.documents.app:reg` at 80 columns: the queue's work
    # and both live workers, every header whole
    status = ok(tenure_cli("status", "--app", APP, env={"COLUMNS": "80"}))
    fits(status)
    row = next(line for line in status.splitlines() if "│ documents " in line)
    assert f" {len(manifest.corrupt)} " in row  # failed
    live = eventually(
        lambda: (
            db.execute(
                f"SELECT count(*) FROM \"{docs_schema}\".workers WHERE state = 'active'"
            ).fetchone()[0]
            == 2
        ),  # fmt: skip
        what="both supervised workers registered",
    )
    assert live
    # The same through TENURE_SCHEMA, as one JSON document
    doc = json.loads(ok(tenure_cli("status", "--json", env={"TENURE_SCHEMA": docs_schema})))
    assert doc["schema"] == docs_schema
    (queue,) = [q for q in doc["queues"] if q["queue"] == "documents"]
    assert queue["failed"] == len(manifest.corrupt) and queue["queued"] == 0
    assert len([w for w in doc["workers"] if w["reports_live"]]) == 2
    # `tenure tasks list --state failed --queue documents`, then `tasks show` of one
    listed = ok(
        tenure_cli("tasks", "list", "--app", APP, "--state", "failed", "--queue", "documents",
                   env={"COLUMNS": "80"})
    )  # fmt: skip
    fits(listed)
    as_json = json.loads(
        ok(tenure_cli("tasks", "list", "--app", APP, "--state", "failed", "--json"))
    )
    ids = [t["id"] for t in as_json["tasks"]]
    assert len(ids) == len(manifest.corrupt)
    assert all(f" {i} " in listed for i in ids)
    assert all(t["last_error"] and "corrupt" in t["last_error"] for t in as_json["tasks"])
    shown = ok(tenure_cli("tasks", "show", str(ids[0]), "--app", APP, env={"COLUMNS": "80"}))
    fits(shown)
    one = json.loads(ok(tenure_cli("tasks", "show", str(ids[0]), "--app", APP, "--json")))
    assert one["task"]["id"] == ids[0] and one["task"]["state"] == "failed"
    assert one["task"]["payload"]["path"] in manifest.corrupt
    assert [a["outcome"] for a in one["attempts"]][-1] == "error"
    # `tenure workers list`: the fleet's two workers
    listed = ok(tenure_cli("workers", "list", "--app", APP, env={"COLUMNS": "80"}))
    fits(listed)
    wl = json.loads(ok(tenure_cli("workers", "list", "--app", APP, "--json")))
    assert len(wl["workers"]) == 2 and all(w["state"] == "active" for w in wl["workers"])
    assert all(str(w["pid"]) in listed for w in wl["workers"])
    # `tenure dashboard --app ...`: the queue and the workers, not "No workers"
    board = Dashboard(tmp_path, "--app", APP)
    try:
        status_code, html, _ = board.request("/")
        assert status_code == 200, html
        assert f"schema <code>{docs_schema}</code>" in html
        assert 'data-queue="documents"' in html and "No workers" not in html
        assert all(f">{w['pid']}<" in html for w in wl["workers"])
    finally:
        board.stop()


def test_a_schema_with_no_tenure_tables_is_refused_with_the_ones_there_are(
    admin_url: str,
) -> None:
    # Given a database of its own with two tenure schemas (one busy) and another app's
    # apps' schemas with tables of the same names
    name = f"story_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(admin_url, dbname=name)
    try:
        busy = Registry(dsn, schema="story_busy")

        @busy.task(queue="q")
        def noop(payload: dict) -> None: ...

        noop.send_many([{}] * 1204)
        Registry(dsn, schema="story_idle").client.open()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO story_busy.workers (id, host, pid, queues, concurrency, version) "
                "VALUES (gen_random_uuid(), 'h', 1, '{q}', 8, 'x')"
            )
            conn.execute("CREATE SCHEMA other_app")  # a task table, but not tenure's
            conn.execute("CREATE TABLE other_app.tasks (something_else int)")
            conn.execute("CREATE SCHEMA third_app")  # a migrations table, not tenure's
            conn.execute("CREATE TABLE third_app.migrations (id int)")
        busy.client.close()
        listing = (
            "tenure schemas in this database: story_busy (1 live worker, 1,204 tasks), "
            "story_idle (0 live workers, 0 tasks)\n"
        )
        # When an operator command looks at the default schema, or at another app's
        result = tenure_cli("status", "--dsn", dsn, env={"TENURE_SCHEMA": None})
        # Then one line says which tenure schemas there are and how to choose one
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == (
            "error: no tenure schema 'tenure' in this database; check --schema (or pass "
            "--app MODULE:REGISTRY, or set TENURE_SCHEMA): " + listing
        )
        other = tenure_cli("tasks", "list", "--dsn", dsn, "--schema", "other_app")
        assert other.returncode == 1
        assert other.stderr.startswith("error: schema 'other_app' holds no tenure tables; ")
        assert other.stderr.endswith(listing)
        # And the schema it names works, by TENURE_SCHEMA as by --schema
        chosen = tenure_cli("status", "--dsn", dsn, "--json", env={"TENURE_SCHEMA": "story_busy"})
        assert chosen.returncode == 0, chosen.stderr
        assert json.loads(chosen.stdout)["queues"][0]["queued"] == 1204
        # And nothing was created: no schema 'tenure'
        with psycopg.connect(dsn, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'tenure'")
            assert found.fetchone() is None
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_registry_and_commands_take_tenure_schema_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, schema: str, database_url: str
) -> None:
    monkeypatch.setenv("TENURE_SCHEMA", schema)
    reg = Registry(database_url)
    assert reg.schema == schema and Registry(database_url, schema="other").schema == "other"
    reg.client.open()  # migrates it
    reg.client.close()
    result = tenure_cli("tasks", "list", "--dsn", database_url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"schema": schema, "tasks": [], "before": None}


@pytest.mark.acceptance
def test_a_succeeded_task_shows_its_earlier_error_under_its_attempts_only(
    fleet_app: Any, workers: Any, database_url: str, schema: str
) -> None:
    # Given a task whose first attempt failed and whose second succeeded
    handle = fleet_app.slow_then_fail_first.send({"s": 0})
    workers("--lease", "3s")
    eventually(lambda: handle.state() == "succeeded", timeout=30, what="second attempt")
    where = ["--dsn", database_url, "--schema", schema]
    # Then neither the CLI nor the dashboard shows it as the task's last error
    shown = json.loads(ok(tenure_cli("tasks", "show", str(handle.id), *where, "--json")))
    assert shown["task"]["last_error"] is None
    assert "the first attempt fails late" in shown["attempts"][0]["error"]
    assert [a["outcome"] for a in shown["attempts"]] == ["error", "succeeded"]
    text = ok(tenure_cli("tasks", "show", str(handle.id), *where))
    assert "last error" not in text
    assert "error of attempt 1 (a later attempt succeeded)" in text
    listed = json.loads(ok(tenure_cli("tasks", "list", *where, "--json")))
    assert listed["tasks"][0]["last_error"] is None
    assert "fails late" not in ok(tenure_cli("tasks", "list", *where))
    client = fleet_app.reg.client
    now = client.store.dashboard_now()
    detail = views.task_detail(client, handle.id, now)
    assert detail["last_error"] is None and "fails late" in detail["attempts"][0]["error"]
    rows = views.task_list(client, views.TaskFilters(), now)["tasks"]
    assert rows[0]["id"] == handle.id and rows[0]["error"] == ""


@pytest.mark.acceptance
def test_a_dead_workers_counts_are_not_shown_as_live(
    fleet_app: Any, workers: Any, db: Any, database_url: str, schema: str
) -> None:
    # Given a worker that runs tasks, then dies without a word
    fleet_app.sleepy.send_many([{"s": 30}] * 2)
    # (a lease of 6 s: its heartbeat, which reports what runs, beats every 2 s)
    w = workers("--lease", "6s", "--concurrency", "2")
    wid = worker_id_of(db, w.pid)
    eventually(
        lambda: db.execute("SELECT running FROM workers WHERE id = %s", (wid,)).fetchone() == (2,),
        timeout=30,
        what="it reports two running",
    )
    w.kill()
    # When its heartbeat is late (as if past the threshold)
    db.execute(
        "UPDATE workers SET heartbeat_at = now() - interval '5 minutes' WHERE id = %s", (wid,)
    )
    # Then the dashboard and the CLI do not show its last report as what it runs now
    data = views.overview(fleet_app.reg.client)
    (row,) = [r for r in data["workers"] if r["id"] == str(wid)]
    assert row["reports_live"] is False and row["running"] is None and row["held"] is None
    assert row["last_running"] == 2 and data["totals"]["busy"] == 0
    where = ["--dsn", database_url, "--schema", schema]
    (listed,) = json.loads(ok(tenure_cli("workers", "list", *where, "--json")))["workers"]
    assert listed["running"] is None and listed["last_reported_running"] == 2
    # And its table row shows - for held and running, as worker_cells makes them
    (late,) = [r for r in fleet_app.reg.client.workers() if r.id == str(wid)]
    report = late.report_at((datetime.now(UTC) - late.heartbeat_at).total_seconds())
    assert report.live is False and report.running == 2
    assert worker_cells(report) == ["-", "-"]


@pytest.mark.parametrize("width", [60, 80, 120])
def test_tables_fit_the_terminal_and_never_cut_a_header(width: int) -> None:
    out = console()
    out.width = width
    columns = [
        Column("id", numeric=True),
        Column("task", wrap=True),
        Column("queue", wrap=True, drop=3),
        Column("state"),
        Column("created", drop=2),
        Column("last error", wrap=True, drop=1),
    ]
    rows = [["12345", "myapp.tasks." + "x" * 50, "documents", "succeeded", "2026-01-01 00:00:00",
             "RuntimeError: " + "y" * 90]] * 3  # fmt: skip
    table, hidden = fit_table(out, "tasks", columns, rows)
    with out.capture() as captured:
        out.print(table)
    text = captured.get()
    fits(text, width)
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    for col in columns:
        assert (col.header in header) != (col.header in hidden), (col.header, hidden)
    assert "myapp.tasks." in text  # folded, not dropped
    if width >= 120:
        assert hidden == []
