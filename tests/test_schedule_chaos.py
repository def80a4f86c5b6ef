"""Faults tier: schedules under a fleet whose workers are SIGKILLed and SIGSTOPped.

Five real workers serve the schedules app (a schedule every second, one every minute)
for three minutes while, at random moments of a fixed seed, one of them is killed
(and replaced) or stopped for a few seconds. Every tick in the window must be sent
exactly once, and none later than one poll interval plus a second after its moment.
``make chaos-schedules`` runs it longer, with a fresh seed
(``TENURE_SCHEDULE_CHAOS_SECONDS``, ``TENURE_SCHEDULE_CHAOS_SEED``).
"""

from __future__ import annotations

import os
import random
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import ROOT, WorkerProcess, eventually
from tests.test_schedules import BEATS_DDL, _table_exists

SECONDS = float(os.environ.get("TENURE_SCHEDULE_CHAOS_SECONDS", "180"))
SEED = int(os.environ.get("TENURE_SCHEDULE_CHAOS_SEED", "20261203"))
FLEET = 5
POLL = timedelta(seconds=1)
LATE_BOUND = POLL + timedelta(seconds=1)
ARGS = ("--lease", "3s", "--queues", "timed", "--poll-interval", "1s", "--drain-timeout", "2s")


def test_every_tick_is_sent_once_while_workers_are_killed_and_stopped(
    database_url: str, schema: str, db: psycopg.Connection[Any], workers: Any, tmp_path: Path
) -> None:
    rng = random.Random(SEED)

    def start() -> WorkerProcess:
        return workers(*ARGS, app="tests.apps.schedules:reg")  # type: ignore[no-any-return]

    fleet = [start()]
    eventually(lambda: _table_exists(db, "schedule_ticks"), what="the schema migrated")
    db.execute(BEATS_DDL)
    fleet += [start() for _ in range(FLEET - 1)]
    eventually(lambda: _live(db) == FLEET, timeout=30, what="five live workers")
    # Given five workers sending the ticks of a 1-second and a 1-minute schedule
    begin = _db_now(db)
    faults: list[str] = []
    stopped: dict[int, float] = {}  # index in fleet -> when to continue it
    # When, for the window, one worker at a time is killed or stopped at random
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(1.0, 5.0))
        for i, until in list(stopped.items()):
            if time.monotonic() >= until:
                fleet[i].signal(signal.SIGCONT)
                del stopped[i]
        candidates = [i for i in range(FLEET) if i not in stopped and fleet[i].alive()]
        if len(candidates) <= FLEET - 2:  # at most two workers out at once
            continue
        victim = rng.choice(candidates)
        if rng.random() < 0.5:
            fleet[victim].kill()
            faults.append(f"{_db_now(db):%H:%M:%S} SIGKILL {fleet[victim].pid}")
            fleet[victim] = start()
        else:
            pause = rng.uniform(1.0, 6.0)
            fleet[victim].signal(signal.SIGSTOP)
            stopped[victim] = time.monotonic() + pause
            faults.append(f"{_db_now(db):%H:%M:%S} SIGSTOP {fleet[victim].pid} for {pause:.1f}s")
    for i in stopped:
        fleet[i].signal(signal.SIGCONT)
    end = _db_now(db)
    # the window's last ticks are sent, and the tasks of killed workers taken over and run
    time.sleep(LATE_BOUND.total_seconds() + 1)
    db.execute("UPDATE schedules SET paused = true")
    eventually(lambda: _unfinished(db) == 0, timeout=60, what="every sent task finished")

    # Then every tick of the window was sent exactly once, none late, and each tick's
    # runs (at least one; a run cut short by SIGKILL runs again) were of that one task
    report, problems = [], []
    schedules = (("every-second", timedelta(seconds=1)), ("every-minute", timedelta(minutes=1)))
    for name, step in schedules:
        expected = _ticks_between(begin, end, step)
        if not expected:  # a window shorter than the schedule's period
            continue
        rows = db.execute(
            "SELECT st.tick, st.outcome, st.fired_at - st.tick, st.task_id,"
            " (SELECT array_agg(DISTINCT b.task_id) FROM beats b"
            "   WHERE b.schedule = st.schedule AND b.tick = st.tick),"
            " (SELECT count(*) FROM beats b WHERE b.schedule = st.schedule AND b.tick = st.tick)"
            " FROM schedule_ticks st WHERE st.schedule = %s AND st.tick BETWEEN %s AND %s"
            " ORDER BY st.tick",
            (name, expected[0], expected[-1]),
        ).fetchall()
        found = {r[0]: r for r in rows}
        for tick in expected:
            row = found.get(tick)
            if row is None:
                problems.append(f"{name} {tick:%H:%M:%S}: never sent")
                continue
            _, outcome, late, task_id, ran_as, runs = row
            report.append(
                f"{name} {tick:%H:%M:%S} {outcome} task={task_id} runs={runs} late={late}"
            )
            if outcome != "sent" or task_id is None or ran_as != [task_id]:
                problems.append(
                    f"{name} {tick:%H:%M:%S}: {outcome}, task {task_id}, ran as {ran_as}"
                )
            if late > LATE_BOUND:
                problems.append(f"{name} {tick:%H:%M:%S}: sent {late} after its tick")
        worst = max((r[2] for r in rows), default=timedelta(0))
        print(f"{name}: {len(expected)} ticks in the window, {len(rows)} sent, latest {worst}")
    # And no task was sent that no tick records: the app's tasks are the ticks' tasks
    (tasks, ticks) = db.execute(
        "SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM finished_tasks),"
        " (SELECT count(*) FROM schedule_ticks WHERE task_id IS NOT NULL)"
    ).fetchone() or (0, 0)
    if tasks != ticks:
        problems.append(f"{tasks} tasks sent but {ticks} ticks recorded")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "schedule-chaos-ticks.txt").write_text(
        "\n".join([f"seed {SEED}, {SECONDS:g} s, faults:", *faults, "ticks:", *report]) + "\n"
    )
    print(f"{len(faults)} faults (seed {SEED}); per-tick list in test-artifacts/")
    assert len(faults) >= SECONDS / 6, faults
    assert any("SIGKILL" in f for f in faults) and any("SIGSTOP" in f for f in faults)
    assert not problems, "\n".join(problems[:40])


def _db_now(db: psycopg.Connection[Any]) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _unfinished(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM tasks").fetchone()
    return int(row[0]) if row else 0


def _live(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM workers WHERE state = 'active'").fetchone()
    return int(row[0]) if row else 0


def _ticks_between(begin: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """The multiples of ``step`` since the epoch strictly after ``begin``, up to ``end``."""
    epoch = datetime(1970, 1, 1, tzinfo=begin.tzinfo)
    k = int((begin - epoch) / step) + 1
    ticks = []
    while epoch + k * step <= end:
        ticks.append(epoch + k * step)
        k += 1
    return ticks
