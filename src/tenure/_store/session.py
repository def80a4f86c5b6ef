"""The store's connection: one per client, opened at first use, behind a lock.

Rules:
- One autocommit connection, opened at first use and reopened if it broke before a
  statement was sent, or if a statement found it on a server that cannot serve it
  (a standby after a failover, a server shutting down). Opening it migrates the
  schema, or (``migrate=False``: the operator commands, the dashboard) only checks
  that it exists, is readable and has
  every migration of this code, refusing in one line otherwise and naming the tenure
  schemas the database does hold.
- A statement runs under the lock, on this connection or on the caller's (then it
  joins the caller's transaction). A failure is a :class:`DatabaseError` naming the
  statement, and the statement is never resent: it may have committed.
- Rows come back through a psycopg row factory (``class_row`` of a dataclass in
  ``rows.py``, or ``scalar_row``): what leaves the store is typed, never a tuple.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import RowFactory

from tenure._db import connect as dbconnect
from tenure._db import sqlfiles
from tenure._db.migrate import check_ready, migrate
from tenure._store.rows import SchemaSummary
from tenure.errors import ConfigError, DatabaseError, SchemaNotReady

T = TypeVar("T")

SCHEMA_ENV = "TENURE_SCHEMA"
DEFAULT_SCHEMA = "tenure"
"""tenure's schema when neither ``schema=`` nor ``TENURE_SCHEMA`` names one."""


def default_schema() -> str:
    """The schema a Registry, a Client and every command use when none is given:
    ``TENURE_SCHEMA``, else ``tenure``."""
    return os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA


class Session:
    """The connection of one :class:`~tenure._store.Store`: one DSN and schema."""

    def __init__(self, dsn: str | None, *, schema: str, migrate: bool) -> None:
        self.schema = sqlfiles.check_schema(schema)
        self.migrates = migrate
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    @property
    def configured_dsn(self) -> str | None:
        """The DSN given (or resolved once connected); None means TENURE_DATABASE_URL,
        else the embedded server, at first use."""
        return self._dsn

    @property
    def dsn(self) -> str:
        """The resolved DSN (starting the embedded server if none is configured)."""
        if not self._dsn:  # None, or an empty one that resolve_dsn refuses
            self._dsn = dbconnect.resolve_dsn(self._dsn)
        return self._dsn

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = dbconnect.connect(self.dsn, "tenure-client")
            try:
                if self.migrates:
                    dbconnect.retry_sync(lambda: migrate(conn, self.schema), what="migrate")
                else:
                    try:
                        dbconnect.retry_sync(lambda: check_ready(conn, self.schema), what="schema")
                    except SchemaNotReady as exc:
                        raise _not_found(conn, self.schema, exc) from None
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def open(self) -> None:
        """Connect now (migrating, or checking the schema) instead of at first use."""
        with self._lock:
            self._connection()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def fetch(
        self,
        name: str,
        params: Mapping[str, Any],
        rows: RowFactory[T],
        connection: psycopg.Connection[Any] | None = None,
    ) -> list[T]:
        """Run the statement ``queries/<name>.sql``; its rows as ``rows`` makes them."""
        query = sqlfiles.query(name, self.schema)
        if connection is not None:
            return _run(connection, name, query, params, rows)
        with self._lock:
            conn = self._connection()
            try:
                return _run(conn, name, query, params, rows)
            except DatabaseError as exc:
                if dbconnect.connection_lost(exc) and self._conn is conn:
                    # a standby answered (a failover under way) or the server went:
                    # the next statement opens a connection to the primary
                    conn.close()
                    self._conn = None
                raise

    def execute(
        self, name: str, params: Mapping[str, Any], connection: psycopg.Connection[Any]
    ) -> None:
        """Run ``queries/<name>.sql``, which returns no rows, on ``connection``."""
        try:
            connection.execute(sqlfiles.query(name, self.schema), params)
        except psycopg.Error as exc:
            raise _failed(name, exc) from exc

    @contextmanager
    def listening(self, channel: str) -> Iterator[psycopg.Connection[Any]]:
        """A connection of its own that LISTENs on ``channel``, closed after."""
        with dbconnect.connect(self.dsn, "tenure-result") as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            yield conn


def _run(
    conn: psycopg.Connection[Any],
    name: str,
    query: bytes,
    params: Mapping[str, Any],
    rows: RowFactory[T],
) -> list[T]:
    try:
        with conn.cursor(row_factory=rows) as cur:
            return cur.execute(query, params).fetchall()
    except psycopg.Error as exc:
        raise _failed(name, exc) from exc


def _failed(name: str, exc: psycopg.Error) -> DatabaseError:
    # The statement may or may not have committed: say so, and never resend it blindly.
    return DatabaseError(f"{name} failed: {dbconnect.describe(exc)}")


def tenure_schemas(conn: psycopg.Connection[Any], *, cap: int = 10_000) -> list[SchemaSummary]:
    """The tenure schemas of the database ``conn`` is on, busiest first (live workers,
    then tasks, counted up to ``cap`` per table). One this role cannot read, or whose
    name is not one tenure would make, comes last, without counts."""
    found = []
    for name, usable in conn.execute(sqlfiles.query("tenure_schemas", DEFAULT_SCHEMA)):
        summary = SchemaSummary(str(name), None, None)
        try:
            if usable:
                query = sqlfiles.query("schema_summary", name)  # ConfigError: odd name
                row = conn.execute(query, {"cap": cap}).fetchone()
                if row is not None:
                    summary = SchemaSummary(str(name), int(row[0]), int(row[1]), bool(row[2]))
        except (ConfigError, psycopg.Error):  # a table this role may not read, say
            pass
        found.append(summary)
    return sorted(found, key=lambda s: (-(s.live_workers or -1), -(s.tasks or -1), s.name))


def _not_found(conn: psycopg.Connection[Any], schema: str, error: SchemaNotReady) -> Exception:
    """``error``; when ``schema`` is no tenure schema at all, with the tenure schemas
    this database does hold."""
    try:
        found = tenure_schemas(conn)
    except psycopg.Error:
        return error
    if not found or any(s.name == schema for s in found):  # unreadable, or behind
        return error
    head = str(error).split(";")[0]  # "no tenure schema 'x' in this database", or so
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    return SchemaNotReady(
        f"{head}; check --schema (or pass --app MODULE:REGISTRY, or set {SCHEMA_ENV}): "
        f"tenure schemas in this database: {', '.join(map(str, found[:10]))}{more}"
    )
