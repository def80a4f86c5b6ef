"""One asyncio database connection that reopens itself when it breaks."""

from __future__ import annotations

import logging
import os
from typing import Any

import psycopg

from tenure._db import connect as dbconnect
from tenure._db import sqlfiles
from tenure.errors import DatabaseError

log = logging.getLogger(__name__)


class Link:
    """A named, lazily (re)opened connection used by one part of the worker."""

    def __init__(self, dsn: str, schema: str, name: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.name = name
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await dbconnect.aconnect(
                self.dsn, f"tenure-{self.name}-{os.getpid()}", worker=True
            )
        return self._conn

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
            if dbconnect.connection_lost(exc) or conn.broken or conn.closed:
                await self.close()
            raise DatabaseError(f"{statement}: {dbconnect.describe(exc)}") from exc
        except Exception as exc:  # parameters psycopg could not adapt or encode
            raise DatabaseError(
                f"{statement}: parameters refused: {type(exc).__name__}: {exc}"
            ) from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                log.debug("closing %s link failed", self.name, exc_info=True)
