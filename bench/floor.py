"""The floor of ``make bench``: the bare SQL of a leased queue, no framework.

One process loops: claim a batch of ``--batch`` rows from a hot table with
``FOR UPDATE SKIP LOCKED`` (setting owner and lease), then complete them fenced on
owner by deleting them from the hot table and inserting them into a history table,
in one statement (the history keeps when each was claimed, the lease's expiry less
its 30 s, and when it finished, as a queue's history would). Two round trips per
batch, autocommit, asynchronous commit like tenure's worker sessions. This is about
the most any lease-based design reaches on this machine and database; the harness
counts history rows to get the rate.

    python bench/floor.py setup DSN SCHEMA N
    python bench/floor.py worker DSN SCHEMA [--batch 100]
    python bench/floor.py single DSN SCHEMA N

``single`` is the floor of a one-by-one send: N single-row INSERTs into the hot
table, each its own durable commit (as ``send`` is), and prints the rate as JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import uuid
from types import FrameType

import psycopg
from psycopg import sql

SETUP = """
DROP SCHEMA IF EXISTS {s} CASCADE;
CREATE SCHEMA {s};
CREATE TABLE {s}.hot (
    id bigserial PRIMARY KEY,
    payload jsonb NOT NULL,
    owner uuid,
    lease_expires_at timestamptz
);
CREATE INDEX hot_claim_idx ON {s}.hot (id) WHERE owner IS NULL;
CREATE TABLE {s}.history (
    id bigint PRIMARY KEY,
    payload jsonb NOT NULL,
    owner uuid NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
"""

FILL = "INSERT INTO {s}.hot (payload) SELECT '{{}}'::jsonb FROM generate_series(1, %s)"

CLAIM = """
WITH picked AS (
    SELECT id FROM {s}.hot WHERE owner IS NULL ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED
)
UPDATE {s}.hot h SET owner = %(me)s, lease_expires_at = now() + interval '30 seconds'
FROM picked WHERE h.id = picked.id
RETURNING h.id
"""

COMPLETE = """
WITH done AS (
    DELETE FROM {s}.hot WHERE id = ANY(%(ids)s) AND owner = %(me)s
    RETURNING id, payload, owner, lease_expires_at
)
INSERT INTO {s}.history (id, payload, owner, started_at)
SELECT id, payload, owner, lease_expires_at - interval '30 seconds' FROM done
"""


def stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["setup", "worker", "single"])
    parser.add_argument("dsn")
    parser.add_argument("schema")
    parser.add_argument("n", type=int, nargs="?", default=0)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    s = sql.Identifier(args.schema)
    with psycopg.connect(args.dsn, autocommit=True, application_name="bench-floor") as conn:
        if args.mode == "setup":
            conn.execute(sql.SQL(SETUP).format(s=s))
            conn.execute(sql.SQL(FILL).format(s=s), [args.n])
            conn.execute(sql.SQL("ANALYZE {s}.hot").format(s=s))
            return 0
        if args.mode == "single":
            insert = sql.SQL("INSERT INTO {s}.hot (payload) VALUES (%s::jsonb)").format(s=s)
            conn.execute(insert, ["{}"])
            t0 = time.perf_counter()
            for _ in range(args.n):
                conn.execute(insert, ["{}"])
            print(json.dumps({"rate": args.n / (time.perf_counter() - t0)}), flush=True)
            return 0
        signal.signal(signal.SIGTERM, stop)
        conn.execute("SET synchronous_commit = off")
        me = uuid.uuid4()
        claim = sql.SQL(CLAIM).format(s=s)
        complete = sql.SQL(COMPLETE).format(s=s)
        while True:
            ids = [r[0] for r in conn.execute(claim, {"n": args.batch, "me": me}).fetchall()]
            if not ids:  # drained: idle until the harness stops us
                time.sleep(0.05)
                continue
            conn.execute(complete, {"ids": ids, "me": me})


if __name__ == "__main__":
    sys.exit(main())
