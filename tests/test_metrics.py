"""Worker surfaces: Prometheus metrics, health checks and JSON logs, on real workers."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from tenure.logs import JsonFormatter, parse_event
from tests.conftest import eventually

pytestmark = pytest.mark.acceptance

SLEEPY = 'queue="work",task="tests.apps.fleet.sleepy"'
NAME = re.compile(r"^[a-z_:][a-z0-9_:]*$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in a scrape, or None if it is absent."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_counters_move_during_a_run(fleet_app: Any, workers: Any) -> None:
    # Given a worker serving /metrics and the health checks on one port
    port = free_port()
    w = workers(
        "--lease",
        "3s",
        "--concurrency",
        "2",
        "--metrics-port",
        str(port),
        "--health-port",
        str(port),
    )
    eventually(lambda: get(port, "/readyz")[0] == 200, what="worker ready")
    before = get(port, "/metrics")[1]
    assert sample(before, "tenure_tasks_succeeded_total", SLEEPY) is None
    # When twelve tasks of 0.3s run two at a time
    handles = fleet_app.sleepy.send_many([{"s": 0.3}] * 12)

    # Then a scrape mid-run shows some done, leases held and the queue's depth (held
    # is 0 for the moment between writing two outcomes and claiming the next two, so
    # the run is scraped until a scrape shows both)
    def mid_run() -> str | None:
        text = get(port, "/metrics")[1]
        done = sample(text, "tenure_tasks_succeeded_total", SLEEPY) or 0
        held = sample(text, "tenure_leases_held") or 0
        return text if 0 < done < 12 and held >= 1 else None

    during = eventually(mid_run, what="a scrape in the middle of the run, leases held")
    assert sample(during, "tenure_queue_depth", 'queue="work"') is not None
    assert sample(during, "tenure_heartbeat_lag_seconds") is not None
    # And when the run is over every counter has reached its end
    eventually(lambda: all(h.state() == "succeeded" for h in handles), timeout=30)

    def finished() -> str | None:
        text = get(port, "/metrics")[1]
        return text if sample(text, "tenure_tasks_succeeded_total", SLEEPY) == 12 else None

    after = eventually(finished, what="succeeded counter reaches 12")
    assert sample(after, "tenure_tasks_claimed_total", SLEEPY) == 12
    assert sample(after, "tenure_task_duration_seconds_count", SLEEPY) == 12
    assert sample(after, "tenure_task_duration_seconds_sum", SLEEPY) >= 12 * 0.3  # type: ignore[operator]
    assert sample(after, "tenure_task_duration_seconds_bucket", SLEEPY + ',le="0.25"') == 0
    assert sample(after, "tenure_task_duration_seconds_bucket", SLEEPY + ',le="+Inf"') == 12
    assert sample(after, "tenure_lease_lost_total") == 0
    assert sample(after, "tenure_worker_ready") == 1
    # And the names follow Prometheus conventions: counters end in _total, units
    # are base units, every sample belongs to a family with HELP and TYPE
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", after, re.M))
    helps = set(re.findall(r"^# HELP (\S+) ", after, re.M))
    assert set(types) == helps
    for line in after.splitlines():
        if line.startswith("#") or not line:
            continue
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        assert NAME.match(name), line
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or types.get(family) == "histogram", line
    for name, kind in types.items():
        assert name.startswith("tenure_")
        assert (kind == "counter") == name.endswith("_total"), name
    assert w.alive()


def test_readyz_is_503_while_draining_and_livez_stays_200(fleet_app: Any, workers: Any) -> None:
    # Given a worker with health and metrics on separate ports, running a 3s task
    health, metrics = free_port(), free_port()
    w = workers(
        "--lease",
        "3s",
        "--drain-timeout",
        "20s",
        "--health-port",
        str(health),
        "--metrics-port",
        str(metrics),
    )
    eventually(lambda: get(health, "/readyz") == (200, "ready\n"), what="ready")
    assert get(health, "/metrics")[0] == 404  # metrics live on their own port
    assert get(metrics, "/readyz")[0] == 404
    assert get(metrics, "/metrics")[0] == 200
    task = fleet_app.sleepy.send({"s": 3})
    eventually(lambda: task.state() == "running", what="task running")
    # When the worker is told to drain
    w.signal(signal.SIGTERM)
    # Then it stops being ready at once but stays alive while the task finishes
    eventually(lambda: get(health, "/readyz") == (503, "draining\n"), timeout=5)
    assert get(health, "/livez") == (200, "ok\n")
    assert task.state() == "running"
    assert w.wait(30) == 0
    assert task.state() == "succeeded"


def test_json_logs_carry_event_task_queue_attempt_and_worker(fleet_app: Any, workers: Any) -> None:
    handle = fleet_app.sleepy.send({"s": 0})
    w = workers("--lease", "3s", "--log-format", "json", "--log-level", "debug")
    eventually(lambda: handle.state() == "succeeded", timeout=20)
    w.signal(signal.SIGTERM)
    w.wait(20)
    entries = [json.loads(line) for line in w.log().splitlines() if line.startswith("{")]
    assert entries, w.log()[-2000:]
    assert all({"ts", "level", "logger", "message"} <= e.keys() for e in entries)
    by_event = {e.get("event"): e for e in entries if e.get("task_id") == handle.id}
    claimed, succeeded = by_event["task_claimed"], by_event["task_succeeded"]
    for entry in (claimed, succeeded):
        assert entry["queue"] == "work" and entry["attempt"] == 1
        assert len(entry["worker_id"]) == 36
    assert any(e.get("event") == "worker_started" for e in entries)
    # Every line of the log is JSON: nothing else is written to it
    assert all(line.startswith("{") for line in w.log().splitlines() if line.strip())


def test_event_fields_are_read_up_to_the_free_text() -> None:
    assert parse_event("lease_lost task=7 attempt=2 worker=ab-cd outcome=error: fenced") == {
        "event": "lease_lost",
        "task_id": 7,
        "attempt": 2,
        "worker_id": "ab-cd",
        "outcome": "error",
    }
    assert parse_event("transient error, retrying") == {}
    record = logging.makeLogRecord({"msg": "task_claimed task=%s queue=%s", "args": (3, "q")})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["event"] == "task_claimed" and entry["task_id"] == 3 and entry["queue"] == "q"
