"""What a fleet does to its database, read from PostgreSQL's statistics views.

``Sampler`` reads ``pg_stat_activity`` ten times a second on a thread of its own:
backends waiting on heavyweight locks (and behind whom, through
``pg_blocking_pids``), and connections per worker process (tenure names each
connection ``tenure-<part>-<pid>``). ``counters`` reads the calls and time of the
schema's SQL functions (``pg_stat_user_functions``; needs ``track_functions = pl``)
and the heartbeats, as updates of the ``workers`` rows. Used by ``bench/scale.py``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench import harness as h


@dataclass
class Activity:
    """What pg_stat_activity showed, ten times a second."""

    samples: int = 0
    lock_waits: int = 0  # backend-samples waiting on a heavyweight lock
    lock_waits_max: int = 0  # most backends waiting at once
    active: int = 0  # backend-samples running a statement
    lock_kinds: set[str] = field(default_factory=set)
    waiters: Counter[str] = field(default_factory=Counter)  # which statements waited
    per_process_max: int = 0
    connections_max: int = 0


# Each backend waiting on a heavyweight lock, as "<connection> <table or function>
# (<lock>) behind <the first blocker, the same way>".
WAITERS = r"""
WITH a AS (
    SELECT pid, wait_event, wait_event_type,
           coalesce(substring(application_name FROM '^tenure-([a-z]+)'), application_name)
           || ' ' || coalesce(substring(query FROM '(?:FROM|INTO|UPDATE) +"?[a-z_]+"?\.([a-z_]+)'),
                              left(query, 20)) AS what
    FROM pg_stat_activity WHERE datname = current_database()
)
SELECT w.what || ' (' || w.wait_event || ') behind ' || coalesce(b.what, '?')
FROM a w LEFT JOIN a b ON b.pid = (pg_blocking_pids(w.pid))[1]
WHERE w.wait_event_type = 'Lock'"""


class Sampler:
    """Samples pg_stat_activity of one database on a thread of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen = Activity()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Activity:
        self._thread.start()
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as db:
            while not self._stop.wait(0.1):
                row = db.execute(
                    """SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'),
                              count(*) FILTER (WHERE state = 'active'),
                              array_agg(DISTINCT wait_event)
                                  FILTER (WHERE wait_event_type = 'Lock'),
                              count(*)
                       FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()
                         AND application_name LIKE 'tenure-%%'"""
                ).fetchone()
                for (who,) in db.execute(WAITERS).fetchall():
                    self.seen.waiters[str(who)] += 1
                per_pid = db.execute(
                    """SELECT coalesce(max(n), 0) FROM (
                           SELECT count(*) AS n FROM pg_stat_activity
                           WHERE datname = current_database()
                             AND application_name ~ '^tenure-[a-z]+-[0-9]+$'
                           GROUP BY substring(application_name FROM '[0-9]+$')) c"""
                ).fetchone()
                assert row is not None and per_pid is not None
                s = self.seen
                s.samples += 1
                s.lock_waits += int(row[0])
                s.lock_waits_max = max(s.lock_waits_max, int(row[0]))
                s.active += int(row[1])
                s.lock_kinds.update(row[2] or [])
                s.connections_max = max(s.connections_max, int(row[3]))
                s.per_process_max = max(s.per_process_max, int(per_pid[0]))


def counters(db: psycopg.Connection[Any], schema: str) -> dict[str, tuple[int, float]]:
    """(calls, total ms) per tenure function, and heartbeats as workers' row updates."""
    rows = db.execute(
        "SELECT funcname, calls, total_time FROM pg_stat_user_functions WHERE schemaname = %s",
        (schema,),
    ).fetchall()
    out = {str(r[0]): (int(r[1]), float(r[2])) for r in rows}
    beats = h.scalar(
        db,
        "SELECT n_tup_upd FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'workers'",
        (schema,),
    )
    out["heartbeat"] = (beats, 0.0)
    return out
