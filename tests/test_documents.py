"""The document fleet of ``examples/documents`` and its demo, on a real PostgreSQL.

The demo runs at small size with real worker processes: one is SIGKILLed, the pool is
redeployed worker by worker and one more worker joins, and the final check must hold
(indexed = ingested - corrupt, every corrupt file failed with a reason).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from examples.documents import corpus, parsers
from tests.conftest import ROOT, eventually, tenure_cli
from tests.test_dashboard import Dashboard

pytestmark = pytest.mark.acceptance

DEMO = [sys.executable, str(ROOT / "examples" / "demo.py")]
TENURE_DOCS = [sys.executable, "-m", "examples.documents.cli"]


def test_every_type_parses_and_corrupt_files_say_why(tmp_path: Path) -> None:
    manifest = corpus.generate(tmp_path, 60, seed=3, processes=1)
    for phrase, path in manifest.planted.items():
        text = " ".join(parsers.extract(path).text.split())
        assert phrase in text, (phrase, path)
    assert {parsers.doc_type_of(p) for p in manifest.planted.values()} == {
        "pdf", "docx", "html", "markdown", "text",
    }  # fmt: skip
    assert {Path(p).suffix for p in manifest.corrupt} >= {".pdf", ".docx", ".txt"}
    for path in manifest.corrupt:
        with pytest.raises(parsers.CorruptDocument, match=r"^corrupt (pdf|docx|text): .+"):
            parsers.extract(path)
    html = parsers.extract(manifest.planted["cobalt orchard ledger"])
    assert "never indexed" not in html.text  # <script> is not text


@pytest.fixture(scope="module")
def demo_run(database_url: str) -> Iterator[dict[str, Any]]:
    """One small run of ``make demo``'s scenario in its own schema."""
    schema = f"d_{uuid.uuid4().hex[:10]}"
    work = Path(tempfile.mkdtemp(prefix="tenure-docs-"))
    summary = work / "summary.json"
    env = {**os.environ, "TENURE_DATABASE_URL": database_url}
    started = time.monotonic()
    done = subprocess.run(
        [
            *DEMO, "--docs", "240", "--seed", "11", "--corpus", str(work / "corpus"),
            "--schema", schema, "--fetch-latency-ms", "250", "--concurrency", "2",
            "--plain", "--summary-json", str(summary),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    out = {
        "code": done.returncode,
        "output": done.stdout + done.stderr,
        "summary": json.loads(summary.read_text()) if summary.exists() else {},
        "schema": schema,
        "env": {**env, "TENURE_DOCS_SCHEMA": schema},
        "manifest": corpus.Manifest.load(work / "corpus"),
        "seconds": time.monotonic() - started,
    }
    try:
        yield out
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_index" CASCADE')
        shutil.rmtree(work, ignore_errors=True)


def test_demo_indexes_every_document_once_through_kill_deploy_and_scale_out(
    demo_run: dict[str, Any], database_url: str
) -> None:
    assert demo_run["code"] == 0, demo_run["output"][-4000:]
    s = demo_run["summary"]
    manifest = demo_run["manifest"]
    assert s["ok"] is True
    assert s["ingested"] == len(manifest.files) == 240
    assert s["indexed"] == s["ingested"] - len(manifest.corrupt)
    assert sorted(f["path"] for f in s["failed"]) == sorted(manifest.corrupt)
    assert all(f["state"] == "failed" and f["reason"].startswith("corrupt ") for f in s["failed"])
    events = "\n".join(s["events"])
    assert "SIGKILL" in events and "every worker replaced" in events and "scale out" in events
    assert s["kills"] == 1 and s["restarts"] >= 3  # the killed worker, and two redeployed
    # What the demo reports is what the database holds: one index row per good document.
    schema = demo_run["schema"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(f'SELECT path FROM "{schema}_index".documents').fetchall()
        states = dict(
            conn.execute(f'SELECT state, count(*) FROM "{schema}".finished_tasks GROUP BY 1')
        )
        waiting = conn.execute(f'SELECT count(*) FROM "{schema}".tasks').fetchone()
    good = set(manifest.files) - set(manifest.corrupt)
    assert {r[0] for r in rows} == good and len(rows) == len(good)
    assert states == {"succeeded": len(good), "failed": len(manifest.corrupt)}
    assert waiting == (0,)


def quick_start_commands() -> list[list[str]]:
    """The operator commands of the README's quick start, in its order, each as argv
    after ``tenure`` (the block that follows "The demo's tasks stay in the schema")."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("The demo's tasks stay in the schema") :]
    match = re.search(r"```\n(.*?)```", section, re.S)
    assert match, "the quick start shows the operator commands"
    commands = []
    for line in match.group(1).splitlines():
        words = line.split("#")[0].split()
        assert words[0] == ".venv/bin/tenure", line
        commands.append(words[1:])
    return commands


def test_the_quick_start_commands_in_order_show_the_demos_work(
    demo_run: dict[str, Any], tmp_path: Path
) -> None:
    assert demo_run["code"] == 0, demo_run["output"][-4000:]
    schema, manifest = demo_run["schema"], demo_run["manifest"]
    # The demo's last line names its schema and the command that shows it
    last = demo_run["output"].strip().splitlines()[-1]
    assert last.startswith(f"schema {schema}; see it with: ")
    assert last.endswith(f"status --schema {schema}")
    commands = [[schema if w == "tenure_demo" else w for w in c] for c in quick_start_commands()]
    assert [c[:2] for c in commands] == [["status", "--schema"], ["tasks", "list"],
                                         ["dashboard", "--schema"]]  # fmt: skip
    env = {"TENURE_DATABASE_URL": demo_run["env"]["TENURE_DATABASE_URL"], "COLUMNS": "80"}
    corrupt = len(manifest.corrupt)
    # `tenure status`: the documents queue with the demo's failed documents, nothing left
    status = tenure_cli(*commands[0], env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "│ documents " in status.stdout, status.stdout
    (queue,) = json.loads(tenure_cli(*commands[0], "--json", env=env).stdout)["queues"]
    assert (queue["queue"], queue["queued"], queue["running"], queue["failed"]) == (
        "documents", 0, 0, corrupt,
    )  # fmt: skip
    # `tenure tasks list --state failed`: one row per corrupt document, with its reason
    listed = tenure_cli(*commands[1], env=env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    as_json = json.loads(tenure_cli(*commands[1], "--json", env=env).stdout)
    paths = [
        json.loads(tenure_cli("tasks", "show", str(t["id"]), "--schema", schema, "--json",
                              env=env).stdout)["task"]["payload"]["path"]
        for t in as_json["tasks"]
    ]  # fmt: skip
    assert sorted(paths) == sorted(manifest.corrupt)
    assert all(re.search(rf"^│ *{t['id']} │", listed.stdout, re.M) for t in as_json["tasks"])
    assert listed.stdout.count("corrupt ") == corrupt
    # `tenure dashboard`: a page with the demo's queue, on a port of the test's own
    board = Dashboard(tmp_path, *commands[2][1:], env=env)
    try:
        status_code, html, _ = board.request("/")
        assert status_code == 200, html
        assert f"schema <code>{schema}</code>" in html
        assert 'data-queue="documents"' in html
    finally:
        board.stop()


@pytest.mark.parametrize("kind", ["pdf", "docx"])
def test_search_finds_a_phrase_planted_in_a_generated_file(
    demo_run: dict[str, Any], kind: str
) -> None:
    assert demo_run["code"] == 0, demo_run["output"][-4000:]
    manifest = demo_run["manifest"]
    phrase = corpus.PLANTED[kind]
    done = subprocess.run(
        [*TENURE_DOCS, "search", phrase, "--json"],
        cwd=ROOT, env=demo_run["env"], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    hits = [json.loads(line) for line in done.stdout.splitlines()]
    assert hits[0]["path"] == manifest.planted[phrase]
    assert hits[0]["path"].endswith(f".{kind}")
    assert phrase.split()[0] in hits[0]["snippet"]
    # The human form prints a ranked table.
    table = subprocess.run(
        [*TENURE_DOCS, "search", f'"{phrase}"'],
        cwd=ROOT, env={**demo_run["env"], "COLUMNS": "200"}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert table.returncode == 0 and "best matches" in table.stdout, table.stdout + table.stderr


def test_ctrl_c_leaves_no_worker_or_database_process_behind(data_dir: Path, tmp_path: Path) -> None:
    from tenure.embedded import embedded_status
    from tenure.embedded.procfs import postgres_processes

    env = {k: v for k, v in os.environ.items() if k != "TENURE_DATABASE_URL"}
    env["TENURE_EMBEDDED_DIR"] = str(data_dir)
    log = (tmp_path / "demo.log").open("w+")
    demo = subprocess.Popen(
        [*DEMO, "--docs", "400", "--corpus", str(tmp_path / "corpus"), "--plain",
         "--fetch-latency-ms", "100"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: dict[int, psutil.Process] = {}
    try:
        me = psutil.Process(demo.pid)

        def fleet_running() -> bool:
            for child in me.children(recursive=True):
                seen.setdefault(child.pid, child)
            workers = [p for p in seen.values() if _is_worker(p)]
            return len(workers) >= 3 and "ingested" in (tmp_path / "demo.log").read_text()

        eventually(fleet_running, timeout=90, interval=0.1, what="supervisor and two workers")
        assert embedded_status(data_dir)["running"]
        for child in me.children(recursive=True):
            seen.setdefault(child.pid, child)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 130
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = (tmp_path / "demo.log").read_text()
    assert "interrupted" in output, output[-3000:]
    _gone, alive = psutil.wait_procs(list(seen.values()), timeout=10)
    assert not alive, [(p.pid, _cmdline(p)) for p in alive]
    assert not embedded_status(data_dir)["running"], output[-3000:]
    assert postgres_processes(data_dir.resolve()) == []


def _cmdline(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(proc.cmdline())
    return "?"


def _is_worker(proc: psutil.Process) -> bool:
    return "worker" in _cmdline(proc) and "examples.documents.app:reg" in _cmdline(proc)


def test_a_watched_folder_is_ingested_again_on_its_schedule_what_changed_only(
    database_url: str,
    schema: str,
    new_schema: Any,
    workers: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    # Given a folder with one document, and a worker of the documents app
    new_schema(f"{schema}_index")  # the app's index, dropped at the end too
    monkeypatch.setenv("TENURE_DOCS_SCHEMA", schema)
    folder = tmp_path / "inbox" / "acme"
    folder.mkdir(parents=True)
    (folder / "first.txt").write_text("the first memo about saffron harbour")
    an_hour_ago = time.time() - 3600
    os.utime(folder / "first.txt", (an_hour_ago, an_hour_ago))
    env = {**os.environ, "TENURE_DATABASE_URL": database_url, "TENURE_DOCS_SCHEMA": schema}
    # When the folder is watched every second
    watched = subprocess.run(
        [*TENURE_DOCS, "watch", str(tmp_path / "inbox"), "--every", "1s"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "enqueued 1 documents now; watching" in watched.stdout
    workers("--lease", "5s", app="examples.documents.app:reg")
    index = f'"{schema}_index".documents'

    def paths() -> list[str]:
        try:
            return [r[0] for r in db.execute(f"SELECT path FROM {index} ORDER BY path")]
        except psycopg.errors.UndefinedTable:
            return []

    eventually(lambda: len(paths()) == 1, timeout=60, what="the first document indexed")
    # And a document is added to it
    (folder / "second.txt").write_text("a later memo about cobalt lanterns")
    # Then a tick of the schedule enqueues it, and only what changed since the tick before
    eventually(lambda: len(paths()) == 2, timeout=30, what="the new document indexed")
    assert [Path(p).name for p in paths()] == ["first.txt", "second.txt"]
    time.sleep(3)  # three more ticks: each finds nothing changed
    rows = db.execute(
        "SELECT st.outcome, f.state, f.result->>'chars' FROM schedule_ticks st"
        " LEFT JOIN finished_tasks f ON f.id = st.task_id ORDER BY st.tick"
    ).fetchall()
    assert len(rows) >= 4 and {r[0] for r in rows} == {"sent"}, rows
    runs = db.execute(f"SELECT path, runs FROM {index} ORDER BY path").fetchall()
    assert [r[1] for r in runs] == [1, 1], runs  # neither document was parsed again
    # And the schedule is listed, and unwatching removes it
    listing = tenure_cli("schedules", "list", "--app", "examples.documents.app:reg", env=env)
    assert "docs.watch" in listing.stdout and "every 1 s" in listing.stdout, listing.stdout
    unwatched = subprocess.run(
        [*TENURE_DOCS, "unwatch", str(tmp_path / "inbox")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert unwatched.returncode == 0 and "stopped watching" in unwatched.stdout
    assert db.execute("SELECT count(*) FROM schedules").fetchone() == (0,)
