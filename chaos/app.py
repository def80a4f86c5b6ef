"""The campaign's tasks: real work whose every run leaves a row that can be counted.

Each run inserts ``(task_id, attempt, pid)`` into ``<schema>.chaos_effects`` before it
does its work, over its own connection (through the same proxy or namespace as the
worker), so the checker measures duplicates instead of assuming them. The schema
comes from ``TENURE_CHAOS_SCHEMA``; the DSN from ``TENURE_DATABASE_URL``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

import tenure
from tenure import Registry
from tenure._db.connect import behind_transaction_pooler, session_target

SCHEMA_ENV = "TENURE_CHAOS_SCHEMA"
EFFECTS_TABLE = "chaos_effects"
LIMITED_MAX = 2
WORK = "chaos.work"
LIMITED = "chaos.limited"

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.chaos_effects (
    run_id   uuid PRIMARY KEY,
    task_id  bigint NOT NULL,
    attempt  integer NOT NULL,
    pid      integer NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS chaos_effects_task_idx ON {schema}.chaos_effects (task_id, attempt);
"""

_local = threading.local()


def _connection(dsn: str) -> psycopg.Connection[Any]:
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=3,
            # behind PgBouncer in transaction mode no statement may stay prepared
            prepare_threshold=None if behind_transaction_pooler() else 5,
            **session_target(dsn),
        )
        _local.conn = conn
    return conn


def record_run(schema: str, dsn: str) -> None:
    """Insert this run's side-effect row; one reconnect on a broken connection.

    The row carries a fresh run id, so a retried insert whose first answer was lost
    still counts as one run.
    """
    ctx = tenure.current()
    run_id = uuid.uuid4()
    stmt = sql.SQL(
        "INSERT INTO {}.chaos_effects (run_id, task_id, attempt, pid) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (run_id) DO NOTHING"
    ).format(sql.Identifier(schema))
    for tries in (1, 2):
        try:
            _connection(dsn).execute(stmt, (run_id, ctx.id, ctx.attempt, os.getpid()))
            return
        except (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction):
            # the server went, or a standby answered during a failover
            _local.conn = None
            if tries == 2:
                raise


def build(schema: str, dsn: str | None = None) -> Registry:
    """The campaign registry for ``schema``: one plain task and one limited task."""
    reg = Registry(dsn, schema=schema)
    effects_dsn = dsn or os.environ.get("TENURE_DATABASE_URL", "")

    @reg.task(name=WORK, queue="chaos", max_attempts=25, max_crashes=50, backoff=0.2)
    def work(payload: dict) -> int:  # type: ignore[type-arg]
        record_run(schema, effects_dsn)
        time.sleep(float(payload.get("ms", 10)) / 1000)
        return int(payload.get("n", 0))

    @reg.task(
        name=LIMITED,
        queue="chaos",
        max_concurrency=LIMITED_MAX,
        max_attempts=25,
        max_crashes=50,
        backoff=0.2,
    )
    def limited(payload: dict) -> int:  # type: ignore[type-arg]
        record_run(schema, effects_dsn)
        time.sleep(float(payload.get("ms", 20)) / 1000)
        return int(payload.get("n", 0))

    return reg


reg = build(os.environ.get(SCHEMA_ENV, "chaos"), os.environ.get("TENURE_DATABASE_URL") or None)
