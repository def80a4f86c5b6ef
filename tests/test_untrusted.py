"""Database strings and request headers treated as untrusted: the CLI prints task data
inert, a log record is one line whatever its arguments hold, and the worker's HTTP
surfaces bound to loopback refuse a foreign Host (DNS rebinding)."""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import urllib.error
import urllib.request
import uuid
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from tenure._untrusted import inert, is_loopback_host_header
from tenure.cli import main
from tenure.logs import JsonFormatter, TextFormatter
from tests.conftest import eventually

# A terminal title change, a colour, a bell: what a hostile task writes into its data.
HOSTILE = "\x1b]0;TITLE\x07\x1b[31mRED"
SHOWN = "\\x1b]0;TITLE\\x07\\x1b[31mRED"
MARKUP = "[red]x[/red]"
FORGED = "k\n2026-12-01 00:00:00,000 INFO forged"


def test_inert_escapes_every_control_character_and_keeps_lines_only_when_asked() -> None:
    assert inert(HOSTILE) == SHOWN
    assert inert("a\tb\nc\rd\x00\x7f\x85\x9b\u2028e") == "a\\tb\\nc\\rd\\x00\\x7f\\x85\\x9b\\u2028e"
    assert inert("line\n\tindented\r\x1b", lines=True) == "line\n\tindented\\r\\x1b"
    assert inert("plain text, ünïcode and [brackets]") == "plain text, ünïcode and [brackets]"


def test_loopback_host_headers() -> None:
    for good in ["localhost", "localhost:8484", "LocalHost", "127.0.0.1", "127.0.0.1:80"]:
        assert is_loopback_host_header(good), good
    for good in ["127.0.0.2:9", "[::1]", "[::1]:8484"]:
        assert is_loopback_host_header(good), good
    for bad in [None, "", "evil.example", "evil.example:80", "[::1].evil.com", "::1"]:
        assert not is_loopback_host_header(bad), bad
    for bad in ["localhost.evil.com", "127.0.0.1.nip.io", "[127.0.0.1]", "localhost:x", "0.0.0.0"]:
        assert not is_loopback_host_header(bad), bad


# -- the CLI ---------------------------------------------------------------------------


@pytest.fixture
def hostile_task(db: psycopg.Connection[Any], fleet_app: Any) -> int:
    """A failed task whose every text field carries escape codes or rich markup."""
    fleet_app.reg.client.open()  # migrate the test schema first
    task_id = 900_001
    error = f"Traceback (most recent call last):\n  File 'x.py'\nRuntimeError: {HOSTILE}"
    db.execute(
        "INSERT INTO finished_tasks (id, task_name, queue, payload, priority, partition_key,"
        " state, attempt, errors, crashes, created_at, last_error, result)"
        " VALUES (%s, %s, %s, %s, 0, %s, 'failed', 1, 1, 0, now(), %s, %s)",
        (
            task_id,
            f"app.{MARKUP}:thumbs_up:",
            MARKUP,
            json.dumps({"ke\x7fy": HOSTILE, "note": "[bold]b[/bold]"}),
            HOSTILE,
            error,
            json.dumps(f"result {HOSTILE}"),
        ),
    )
    db.execute(
        "INSERT INTO attempts (task_id, attempt, worker_id, started_at, ended_at, outcome, error)"
        " VALUES (%s, 1, %s, now() - interval '1 second', now(), 'error', %s)",
        (task_id, uuid.uuid4(), error),
    )
    db.execute(
        "INSERT INTO tasks (task_name, queue, payload, partition_key, max_attempts, max_crashes)"
        " VALUES (%s, %s, '{}', %s, 1, 1)",
        (f"app.{HOSTILE}", MARKUP, HOSTILE),
    )
    return task_id


@pytest.fixture
def cli(database_url: str, schema: str) -> Any:
    # Not a terminal and no forced colour: any ESC in the output came from the data
    runner = CliRunner(env={"COLUMNS": "250", "TERM": "dumb", "FORCE_COLOR": None})

    def invoke(*args: str) -> str:
        result = runner.invoke(main, [*args, "--dsn", database_url, "--schema", schema])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    return invoke


def assert_inert(output: str) -> None:
    for byte in ("\x1b", "\x07", "\x7f", "\x9b"):
        assert byte not in output, (byte, output)


def test_tasks_show_prints_task_data_inert_and_markup_literally(
    cli: Any, hostile_task: int
) -> None:
    shown = cli("tasks", "show", str(hostile_task))
    assert_inert(shown)
    assert shown.count(SHOWN) == 3  # partition key, the attempt's error, the last error
    # (JSON writes its own escapes for the payload and result)
    assert shown.count("\\u001b]0;TITLE\\u0007\\u001b[31mRED") == 2
    assert MARKUP in shown and f"app.{MARKUP}:thumbs_up:" in shown
    assert "[bold]b[/bold]" in shown and "ke\\u007fy" in shown
    # The traceback keeps its lines
    assert "Traceback (most recent call last):\n  File 'x.py'\nRuntimeError: " in shown


def test_tasks_list_and_status_print_task_data_inert(cli: Any, hostile_task: int) -> None:
    listed = cli("tasks", "list")
    assert_inert(listed)
    assert SHOWN in listed and MARKUP in listed and f"app.{SHOWN}" in listed
    status = cli("status", "--keys", "5")
    assert_inert(status)
    assert MARKUP in status and SHOWN in status


# -- logs ------------------------------------------------------------------------------


def record(*args: Any, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord(
        "tenure._worker.executor",
        logging.ERROR,
        __file__,
        1,
        "task_payload_invalid task=%s attempt=%s error=%s",
        args,
        exc_info,
    )


def test_a_text_log_record_is_one_line_whatever_its_arguments_hold() -> None:
    line = TextFormatter().format(record(7, 1, f"{FORGED}\r\x1b[2K{HOSTILE}"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith(
        "task_payload_invalid task=7 attempt=1 error="
        "k\\n2026-12-01 00:00:00,000 INFO forged\\r\\x1b[2K" + SHOWN
    )
    # And JSON stays one valid object on one line, holding the text as it was
    line = JsonFormatter().format(record(7, 1, f"{FORGED}{HOSTILE}"))
    assert "\n" not in line and "\x1b" not in line
    entry = json.loads(line)
    assert entry["message"].endswith(FORGED + HOSTILE) and entry["task_id"] == 7


def test_a_traceback_keeps_its_lines_indented_under_its_record() -> None:
    try:
        raise ValueError(FORGED)
    except ValueError:
        exc_info = sys.exc_info()
    rec = record(7, 1, "x", exc_info=exc_info)
    text = TextFormatter().format(rec)
    first, *rest = text.split("\n")
    assert first.endswith("error=x") and rest[0] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in rest)
    assert "    2026-12-01 00:00:00,000 INFO forged" in rest
    # The record itself is left as it was for other handlers
    assert rec.exc_text is None and rec.getMessage().endswith("error=x")


def test_setup_logging_text_uses_the_inert_formatter(capsys: pytest.CaptureFixture[str]) -> None:
    from tenure.logs import setup_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("info", "text")
        logging.getLogger("tenure.test").warning("event name=%s", FORGED)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "name=k\\n2026-12-01" in err


def test_a_worker_logs_a_hostile_task_name_on_one_line(
    db: psycopg.Connection[Any], fleet_app: Any, workers: Any
) -> None:
    # Given a queued task whose name, unknown to the worker, forges a log line
    fleet_app.reg.client.open()
    db.execute(
        "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes)"
        " VALUES (%s, 'work', '{}', 1, 1)",
        (f"{FORGED}\x1b[31m",),
    )
    # When a worker with text logs reports it
    w = workers("--lease", "3s")
    eventually(lambda: "task_unknown" in w.log(), what="the unknown task reported")
    # Then its report is one line, shown escaped, and no forged line follows
    log = w.log()
    assert "task_unknown name=k\\n2026-12-01 00:00:00,000 INFO forged\\x1b[31m:" in log
    assert "\n2026-12-01 00:00:00,000 INFO forged" not in log and "\x1b" not in log


# -- the worker's HTTP surfaces ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, host: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_worker_surfaces_on_loopback_refuse_a_foreign_host(workers: Any) -> None:
    # Given a worker serving metrics and health checks on a loopback address
    port = free_port()
    workers("--http-host", "127.0.0.1", "--metrics-port", str(port), "--health-port", str(port))
    eventually(lambda: get(port, "/livez", "localhost") == 200, what="worker serving")
    # Loopback names are served
    for host in [f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"]:
        assert get(port, "/metrics", host) == 200, host
    # A page whose name was rebound to 127.0.0.1 sends its own name and is refused
    for path in ["/metrics", "/livez", "/readyz"]:
        for host in [f"evil.example:{port}", "evil.example", "[::1].evil.com", ""]:
            assert get(port, path, host) == 403, (path, host)


def test_worker_surfaces_beyond_loopback_serve_any_host(workers: Any) -> None:
    # Given a worker bound to every address, as in a pod probed at the pod's IP
    port = free_port()
    workers("--http-host", "0.0.0.0", "--health-port", str(port))
    eventually(lambda: get(port, "/livez", "localhost") == 200, what="worker serving")
    # (only 127.0.0.1 is ever connected to; the pod's IP is only a header here)
    assert get(port, "/livez", f"10.20.30.40:{port}") == 200
    assert get(port, "/livez", "evil.example") == 200


def test_log_lines_in_memory_stream_are_separable() -> None:
    # Two hostile records written through one handler read back as exactly two lines
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    for args in [(1, 1, FORGED), (2, 1, f"{HOSTILE}\u2028{FORGED}")]:
        handler.emit(record(*args))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and all(" ERROR tenure._worker.executor " in line for line in lines)
