"""What a failover looks like from the fleet, read on the nodes themselves.

:func:`first_claim` and :func:`workers_back` read, on the new primary, when the fleet
first claimed there and when each worker's heartbeat first reached it.
:class:`StandbyWatch` watches every node for tenure sessions on a standby, through its
socket.

A worker must never stay connected to a demoted server: each connection it opens says
which server it reached and a standby is refused at once, and a server demoted under
a connection restarts, which ends it. This watch measures that directly. Every
:data:`POLL_S` it asks each node, over the node's unix socket (which a network cut
does not reach), whether it is in recovery and which ``tenure-*`` sessions it holds;
a session seen on a node in recovery counts, with how long it had been open when last
seen (both times from that node's own clock).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from chaos import ha

POLL_S = 0.05
QUERY = (
    "SELECT pg_is_in_recovery(), pid, backend_start, now(), application_name"
    " FROM pg_stat_activity WHERE application_name LIKE 'tenure-%'"
    " AND backend_type = 'client backend'"
)


@dataclass
class Seen:
    node: str
    application: str
    open_seconds: float  # from the session's start to the last poll that saw it


@dataclass
class StandbyWatch:
    nodes: list[ha.Node]
    seen: dict[tuple[str, int, Any], Seen] = field(default_factory=dict)
    polls: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> StandbyWatch:
        self._thread = threading.Thread(target=self._run, name="standby-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def longest(self) -> float:
        return max((s.open_seconds for s in self.seen.values()), default=0.0)

    def summary(self) -> str:
        if not self.seen:
            return f"tenure sessions seen on a standby: 0 in {self.polls:,} polls"
        worst = max(self.seen.values(), key=lambda s: s.open_seconds)
        return (
            f"tenure sessions seen on a standby: {len(self.seen)} in {self.polls:,} polls, "
            f"longest open {worst.open_seconds:.3f} s ({worst.application} on {worst.node})"
        )

    def _run(self) -> None:
        conns: dict[str, psycopg.Connection[Any]] = {}
        try:
            while not self._stop.is_set():
                for node in self.nodes:
                    self._poll(node, conns)
                self.polls += 1
                self._stop.wait(POLL_S)
        finally:
            for conn in conns.values():
                conn.close()

    def _poll(self, node: ha.Node, conns: dict[str, psycopg.Connection[Any]]) -> None:
        conn = conns.get(node.name)
        try:
            if conn is None or conn.closed or conn.broken:
                conn = conns[node.name] = psycopg.connect(
                    host=str(node.root),
                    port=ha.PG_PORT,
                    user="postgres",
                    dbname="postgres",
                    autocommit=True,
                    connect_timeout=1,
                    application_name="standby-watch",
                )
            rows = conn.execute(QUERY).fetchall()
        except psycopg.Error:
            return  # the node is down or starting: it holds no session now
        for in_recovery, pid, started, now, application in rows:
            if in_recovery:
                key = (node.name, pid, started)
                self.seen[key] = Seen(node.name, application, (now - started).total_seconds())


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def first_claim(node_dsn: str, schema: str, since: float, timeout: float) -> float | None:
    """The first ``started_at`` at or after ``since`` on the server of ``node_dsn``."""
    query = sql.SQL(
        "SELECT least((SELECT min(started_at) FROM {s}.tasks WHERE started_at >= %(t)s),"
        " (SELECT min(started_at) FROM {s}.attempts WHERE started_at >= %(t)s))"
    ).format(s=sql.Identifier(schema))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(node_dsn, autocommit=True, connect_timeout=2) as conn:
                while time.monotonic() < deadline:
                    row = conn.execute(query, {"t": _at(since)}).fetchone()
                    if row and row[0] is not None:
                        return float(row[0].timestamp())
                    time.sleep(0.05)
        except psycopg.OperationalError:
            time.sleep(0.1)
    return None


def workers_back(node_dsn: str, schema: str, since: float, timeout: float) -> list[float]:
    """Seconds from ``since`` to each live worker's first heartbeat after it, on the
    server of ``node_dsn``."""
    query = sql.SQL("SELECT id, heartbeat_at FROM {s}.workers WHERE state <> 'gone'").format(
        s=sql.Identifier(schema)
    )
    first: dict[Any, float] = {}
    seen: set[Any] = set()
    deadline = time.monotonic() + timeout
    with psycopg.connect(node_dsn, autocommit=True, connect_timeout=2) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(query).fetchall()
            seen |= {r[0] for r in rows}
            for wid, beat in rows:
                if wid not in first and beat.timestamp() >= since:
                    first[wid] = beat.timestamp() - since
            if seen and len(first) == len(seen):
                break
            time.sleep(0.05)
    return sorted(first.values())
