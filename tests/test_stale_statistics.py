"""The hot statements read rows in proportion to their batch, whatever the statistics say.

A vacuum of the hot table while it is momentarily empty records it as empty
(``reltuples = 0``), and when the vacuum cannot truncate the table (it never can while
workers hold locks on it) the planner then believes every later size of it is empty
until the next ANALYZE. A burst of sends lands in that window. Planned for an empty
table, a statement that joins its batch to the table reads the whole table once per
batch, or once per row of it: a fleet at an eighth of its capacity stalled with a
growing backlog. So every hot statement reaches the table only through the head of
the claim index, the partial indexes of running and scheduled rows, or the primary
key with the batch's ids (``id = ANY``), and joins its batch to nothing else.

Each test puts the table into one statistics state, runs every hot statement past
plpgsql's switch to generic plans, and counts the rows and index entries of the hot
table each one read (PostgreSQL's own counters, not timings).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tenure._db import sqlfiles
from tenure._db.migrate import migrate

BACKLOG = 50_000  # a whole-table read of this is what the bound below rules out
BATCH = 100
LEASE = "30 seconds"
RUNS = 7  # plpgsql plans a statement five times with its values, then generically


def _reads(conn: psycopg.Connection[Any]) -> int:
    """Rows and index entries of the hot table read so far, as the statistics count them."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")  # the flush happens when the previous statement ends
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT coalesce(t.seq_tup_read, 0) + coalesce(t.idx_tup_fetch, 0)"
        " + (SELECT coalesce(sum(i.idx_tup_read), 0) FROM pg_stat_user_indexes i"
        "    WHERE i.relid = t.relid)"
        " FROM pg_stat_user_tables t WHERE t.relid = 'tasks'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _queue(conn: psycopg.Connection[Any], n: int, state: str = "queued") -> None:
    conn.execute(
        "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes, state, vtime)"
        " SELECT 'noop', 'default', '{}', 5, 3, %s, g FROM generate_series(1, %s) g",
        (state, n),
    )


def _vacuumed_while_empty(conn: psycopg.Connection[Any]) -> None:
    # Given a table that was vacuumed while momentarily empty, without truncation (as
    # under load, where the vacuum cannot take the lock truncation needs)
    _queue(conn, 5_000)
    conn.execute("DELETE FROM tasks")
    conn.execute("VACUUM (TRUNCATE false) tasks")
    # And then a burst of sends before any ANALYZE
    _queue(conn, BACKLOG)
    pages, tuples = conn.execute(
        "SELECT relpages, reltuples FROM pg_class WHERE oid = 'tasks'::regclass"
    ).fetchone() or (0, 0)
    assert pages > 0 and tuples == 0, "the statistics should call the table empty"


def _fresh(conn: psycopg.Connection[Any]) -> None:
    # Given a backlog whose statistics are up to date
    _queue(conn, BACKLOG)
    conn.execute("VACUUM ANALYZE tasks")


def _analyzed_deep_then_drained(conn: psycopg.Connection[Any]) -> None:
    # Given statistics taken over a table ten times fuller than it is now (the drained
    # rows were another queue's, so no statement here walks their dead index entries)
    _queue(conn, BACKLOG)
    conn.execute(
        "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes)"
        " SELECT 'noop', 'drained', '{}', 5, 3 FROM generate_series(1, %s)",
        (9 * BACKLOG,),
    )
    conn.execute("ANALYZE tasks")
    conn.execute("DELETE FROM tasks WHERE queue = 'drained'")


STATES: dict[str, Callable[[psycopg.Connection[Any]], None]] = {
    "vacuumed-while-empty": _vacuumed_while_empty,
    "fresh": _fresh,
    "analyzed-deep-then-drained": _analyzed_deep_then_drained,
}


class Probe:
    """Runs one named statement on the test's connection and records what it read."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.worst: dict[str, int] = {}

    def run(self, statement: str, label: str = "", **params: Any) -> list[tuple[Any, ...]]:
        before = _reads(self.conn)
        cur = self.conn.execute(sqlfiles.query(statement, self.schema), params)
        rows = cur.fetchall() if cur.description else []
        read = _reads(self.conn) - before
        name = f"{statement} {label}".strip()
        self.worst[name] = max(self.worst.get(name, 0), read)
        return rows


def _outcomes(held: dict[int, int]) -> dict[str, Any]:
    ids = list(held)
    return {
        "ids": ids,
        "attempts": [held[i] for i in ids],
        "outcomes": ["succeeded"] * len(ids),
        "results": [None] * len(ids),
        "errors": [None] * len(ids),
        "delays": [0.0] * len(ids),
    }


@pytest.mark.parametrize("state", list(STATES))
def test_hot_statements_read_in_proportion_to_their_batch(
    db: psycopg.Connection[Any], schema: str, state: str
) -> None:
    migrate(db, schema)
    STATES[state](db)
    probe = Probe(db, schema)
    worker = uuid.uuid4()
    claim = {"queues": ["default"], "names": ["noop"], "limit": BATCH, "lease": LEASE}

    # When one worker claims, completes and claims again, and renews what it holds
    held: dict[int, int] = {}
    for i in range(RUNS):
        rows = probe.run("task_complete_claim", worker=worker, **_outcomes(held), **claim, start=0)
        held = {r[0]: r[5] for r in rows if r[1] is None}
        assert len(held) == BATCH
        assert sum(1 for r in rows if r[1] == "succeeded") == (BATCH if i else 0)
    for _ in range(RUNS):
        renewed = probe.run(
            "lease_renew_many",
            worker=worker,
            state="active",
            held=len(held),
            running=len(held),
            lease=LEASE,
            ids=list(held),
            attempts=list(held.values()),
            surrendered=[],
            orphan_after="15 seconds",
            outcomes_pending=0,
            outcomes_stalled=None,
        )
        assert sorted(renewed[0][1]) == sorted(held)
    # And completes and claims in two statements, as a worker with nothing to carry does
    for _ in range(RUNS):
        done = probe.run("task_complete_many", worker=worker, **_outcomes(held))
        assert len(done) == BATCH
        rows = probe.run("task_claim", worker=worker, **claim, start=0)
        held = {r[0]: r[5] for r in rows}
        assert len(held) == BATCH
    # And the reaper takes over a dead worker's expired leases, a batch at a time
    db.execute(
        "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = ANY(%s)",
        (list(held),),
    )
    expired = probe.run("lease_expire_many", max=1000)
    assert len(expired) == BATCH
    for _ in range(RUNS):
        probe.run("lease_expire_many", max=1000)
    # And the promoter moves due retries back into the queue
    db.execute(
        "UPDATE tasks SET state = 'scheduled', run_after = now()"
        " WHERE id = ANY(ARRAY(SELECT id FROM tasks WHERE state = 'queued' LIMIT %s))",
        (RUNS * BATCH,),
    )
    for _ in range(RUNS):
        promoted = probe.run("task_promote_due", max=BATCH)
        assert promoted == [("default", BATCH)]
    # And senders add to the backlog
    for _ in range(RUNS):
        probe.run(
            "task_send_many",
            run_at=None,
            delay="0 seconds",
            name="noop",
            queue="default",
            limited=False,
            partition_key="",
            priority=0,
            max_attempts=5,
            max_crashes=3,
            lease=None,
            payloads=[json.dumps({})] * BATCH,
            costs=[1] * BATCH,
        )
    # And, under a rate limit (far above what is claimed) and one per key, workers claim
    # through the rate's buckets
    # (published as a starting worker does, which flags the name's waiting rows)
    db.execute(
        sqlfiles.query("rates_sync", schema),
        {"scopes": ["task"] * 2, "names": ["noop"] * 2, "kinds": ["all", "each"],
         "keys": [""] * 2, "per_second": [1e6] * 2, "bursts": [1e6] * 2,
         "all_tasks": ["noop"], "all_queues": []},
    )  # fmt: skip
    # (flagging the waiting rows left their entries in the unflagged index dead: the
    # first claim's look at that index's head walks them once, as any claim would until
    # the vacuumer runs, so it is not counted)
    rows = db.execute(
        sqlfiles.query("task_complete_claim", schema),
        {"worker": worker, **_outcomes({}), **claim, "start": 0},
    ).fetchall()
    held = {r[0]: r[5] for r in rows if r[1] is None}
    for _ in range(RUNS):
        rows = probe.run(
            "task_complete_claim", "rated", worker=worker, **_outcomes(held), **claim, start=0
        )
        held = {r[0]: r[5] for r in rows if r[1] is None}
        assert len(held) == BATCH

    # Then no statement read more than a small multiple of its batch (they read 4 to 12
    # times it): a read of the whole table (50,000 rows), of the batch once per row of
    # it, or a planner's probe of dead index entries at each planning is past this bound
    # (a claim under a rate per key reads the queue's head 8 times as deep as its batch,
    # to find the work of keys not at their limit: its bound is 40 times the batch)
    bound = 25 * BATCH
    bounds = {"task_complete_claim rated": 40 * BATCH}
    over = {k: v for k, v in probe.worst.items() if v > bounds.get(k, bound)}
    assert probe.worst and not over, (state, over)
