"""Rate limits hold fleet-wide: four real worker processes, 20 partition keys, a task
limit of 50/s (burst 10) and 5/s per key (burst 2), for 60 s.

Every attempt's start comes from the database (attempts.started_at, the claim's
clock), so the sliding windows below are what the API behind the task would see.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.conftest import WorkerProcess, eventually, load_app

KEYS = [f"tenant-{i:02d}" for i in range(20)]
SECONDS = 60.0

pytestmark = pytest.mark.acceptance


def most_in_a_second(starts: np.ndarray[Any, np.dtype[Any]]) -> int:
    """The most starts in any window [s, s + 1 s) that begins at a start."""
    starts = np.sort(starts)
    ends = np.searchsorted(starts, starts + 1.0, side="left")
    return int((ends - np.arange(len(starts))).max()) if len(starts) else 0


def test_four_workers_never_exceed_the_task_rate_or_any_key_rate(
    db: psycopg.Connection[Any],
    workers: Callable[..., WorkerProcess],
    schema: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = load_app("tests.apps.rated", schema, database_url, monkeypatch)
    TASK_RATE, KEY_RATE = app.TASK_RATE, app.KEY_RATE  # noqa: N806 - the app's constants
    # Given 3,600 tasks over 20 keys (more than 60 s of work at 50/s)
    for key in KEYS:
        app.call_api.send_many([{}] * 180, partition_key=key)
    app.reg.client.close()
    # When four workers with 20 slots each serve them for 60 s
    fleet = [workers("--concurrency", "20", app="tests.apps.rated:reg") for _ in range(4)]
    eventually(
        lambda: (
            db.execute("SELECT count(*) FROM workers WHERE state = 'active'").fetchone() == (4,)
        ),
        what="four workers up",
    )
    first = eventually(
        lambda: (
            db.execute("SELECT min(started_at) FROM attempts").fetchone()[0]
            or db.execute("SELECT min(started_at) FROM tasks").fetchone()[0]
        ),
        what="a first start",
    )
    time.sleep(SECONDS + 1.5)
    for w in fleet:
        assert w.alive(), w.log()[-2000:]
    rows = db.execute(
        """
        SELECT extract(epoch FROM a.started_at - %(first)s)::float8, t.partition_key
        FROM attempts a JOIN finished_tasks t ON t.id = a.task_id
        UNION ALL
        SELECT extract(epoch FROM t.started_at - %(first)s)::float8, t.partition_key
        FROM tasks t WHERE t.state = 'running'
        """,
        {"first": first},
    ).fetchall()
    starts = np.array([r[0] for r in rows])
    in_window = starts[(starts >= 0) & (starts < SECONDS)]
    queued = db.execute("SELECT count(*) FROM tasks WHERE state = 'queued'").fetchone()
    # Then there was work left the whole time
    assert queued is not None and queued[0] > 0
    rate = len(in_window) / SECONDS
    fleet_most = most_in_a_second(starts)
    key_most = {k: most_in_a_second(np.array([r[0] for r in rows if r[1] == k])) for k in KEYS}
    print(
        f"starts {len(in_window)} in {SECONDS:g} s ({rate:.2f}/s); most in a second "
        f"{fleet_most} fleet-wide, {max(key_most.values())} for one key"
    )
    # And no sliding second started more than the rate plus the burst, fleet-wide
    assert fleet_most <= TASK_RATE.per_second + TASK_RATE.burst
    # And none per key above its own
    key_limit = KEY_RATE.per_second + KEY_RATE.burst
    assert all(v <= key_limit for v in key_most.values()), key_most
    # And the fleet kept within 5 % of the limit while there was work for it
    assert abs(rate - TASK_RATE.per_second) <= 0.05 * TASK_RATE.per_second, rate
