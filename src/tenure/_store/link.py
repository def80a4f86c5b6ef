"""A worker part's connection: opened lazily, reopened when it breaks, never on a standby.

Rules:
- A :class:`Link` opens its connection at first use and again after one broke; each
  new connection says which server it reached (``server_identity``) and a standby is
  refused at once as a transient failure (SQLSTATE 25006), so no part of a worker
  stays on a demoted server after a failover.
- Every failure is a :class:`~tenure.errors.DatabaseError` naming the statement, with
  the driver's error as its ``__cause__``; a connection whose failure was the
  connection's or the server's is dropped.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import psycopg

from tenure._db import connect as dbconnect
from tenure._db import sqlfiles
from tenure._store.rows import ServerIdentity
from tenure.errors import DatabaseError

log = logging.getLogger(__name__)

DURABILITY_CHECK_S = 10.0


class _Durability:
    """Whether this process's database has been seen with synchronous standbys."""

    synchronous = False


DURABILITY = _Durability()


class Link:
    """A named, lazily (re)opened asyncio connection: one per part of the worker.

    Its commits are asynchronous (``synchronous_commit = off``) unless the database
    waits for synchronous standbys: delivery is at-least-once, so a claim, renewal or
    outcome lost in a database crash only means the task runs again, and not waiting
    for each WAL flush is what lets a fleet go fast. A database with synchronous
    standbys was set up so that nothing acknowledged is lost in a failover: there the
    worker's commits wait like every other (``send``'s always do). An HA manager
    clears ``synchronous_standby_names`` for a moment around a failover (a new primary
    has no standby yet), so the answer is sticky: once any link of this process has
    seen synchronous standbys (each checks at connect and, until then, every
    :data:`DURABILITY_CHECK_S`), every link commits synchronously from its next
    statement on. Behind a pooler in transaction mode no session setting is made;
    set it per role there.
    """

    def __init__(self, dsn: str, schema: str, name: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.name = name
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.server: ServerIdentity | None = None  # what the last connection reached
        self.clock_offset: float | None = None  # its clock minus ours, in seconds
        self._asynchronous = False  # this session commits with synchronous_commit = off
        self._checked_at = 0.0  # monotonic time of the last look at the standbys

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = await dbconnect.aconnect(self.dsn, f"tenure-{self.name}-{os.getpid()}")
            try:
                self.server = await self._identify(conn)
                self._checked_at = time.monotonic()
                self._asynchronous = False
                if not DURABILITY.synchronous and not dbconnect.behind_transaction_pooler():
                    await conn.execute("SET synchronous_commit = off")
                    self._asynchronous = True
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        elif self._asynchronous:
            await self._recheck_durability(self._conn)
        return self._conn

    async def _recheck_durability(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Commit synchronously from now on once this process has seen synchronous
        standbys (looking again every DURABILITY_CHECK_S until then)."""
        if not DURABILITY.synchronous and time.monotonic() - self._checked_at >= DURABILITY_CHECK_S:
            self._checked_at = time.monotonic()
            try:
                cur = await conn.execute("SELECT current_setting('synchronous_standby_names')")
                row = await cur.fetchone()
            except psycopg.Error as exc:
                await self._drop_if_broken(conn, exc)
                raise DatabaseError(f"{self.name} link: {dbconnect.describe(exc)}") from exc
            if row is not None and row[0]:
                DURABILITY.synchronous = True
        if DURABILITY.synchronous:
            try:
                await conn.execute("SET synchronous_commit = DEFAULT")
            except psycopg.Error as exc:
                await self._drop_if_broken(conn, exc)
                raise DatabaseError(f"{self.name} link: {dbconnect.describe(exc)}") from exc
            self._asynchronous = False

    async def _identify(self, conn: psycopg.AsyncConnection[Any]) -> ServerIdentity:
        """Which server ``conn`` reached; a standby (a DSN or proxy that still points
        at the old primary after a failover) is refused as a transient failure, so the
        caller's next pass connects again and finds the primary."""
        try:
            cur = await conn.execute(sqlfiles.query("server_identity", self.schema))
            row = await cur.fetchone()
        except psycopg.Error as exc:
            raise DatabaseError(f"server_identity: {dbconnect.describe(exc)}") from exc
        assert row is not None
        found = ServerIdentity(str(row[0]), bool(row[1]), str(row[2]), bool(row[3]), row[4])
        if found.synchronous_standbys:
            DURABILITY.synchronous = True  # for every link of this process, for good
        # how far the server's clock is from ours (within the round trip)
        self.clock_offset = found.clock.timestamp() - time.time()
        if found.in_recovery:
            refusal = psycopg.errors.ReadOnlySqlTransaction(
                f"{found.server} is a standby (in recovery); connecting again to find the primary"
            )
            raise DatabaseError(f"{self.name} link: {refusal}") from refusal
        return found

    async def fetch(self, statement: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run the named statement and return its rows; a broken link is dropped.

        Every failure, including parameters that cannot be sent at all (a string
        that cannot be encoded), is a :class:`DatabaseError` whose cause
        :func:`~tenure._db.connect.is_transient` judges."""
        conn = await self.connection()
        try:
            cur = await conn.execute(sqlfiles.query(statement, self.schema), params)
            return await cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            await self._drop_if_broken(conn, exc)
            raise DatabaseError(f"{statement}: {dbconnect.describe(exc)}") from exc
        except Exception as exc:  # parameters psycopg could not adapt or encode
            raise DatabaseError(
                f"{statement}: parameters refused: {type(exc).__name__}: {exc}"
            ) from exc

    async def _drop_if_broken(self, conn: psycopg.AsyncConnection[Any], exc: psycopg.Error) -> None:
        if dbconnect.connection_lost(exc) or conn.broken or conn.closed:
            await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                log.debug("closing %s link failed", self.name, exc_info=True)
