"""Least-privilege roles for the tests, made with the grants docs/deployment.md gives.

``TENURE_TEST_ROLE`` picks the role the suite's tenure code runs as (the fixtures
``database_url`` and ``schema`` in tests/conftest.py hand it out):

- ``owner``: a login role, not a superuser, with no CREATE on the database, that owns
  each test's schema, made for it beforehand. tenure migrates and runs as it.
- ``dml``: a login role given only the application grants, after the owner migrated
  each test's schema. The tests' own inspection connection (``db``) is the owner's.

The statements are read from docs/deployment.md's ``<!-- grants:NAME -->`` blocks,
with this session's role and schema names filled in, so the tier tests what the doc
says. The roles are made once per session and dropped at its end.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

MODE = os.environ.get("TENURE_TEST_ROLE", "").lower()
MODES = ("", "owner", "dml")
DOC = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"
# The names the doc's statements use for the owner, the application role, the schema
# and the database.
DOC_NAMES = ("myapp_owner", "myapp", "tenure", "appdb")


def doc_statements(block: str) -> list[str]:
    """The SQL statements of docs/deployment.md's ``<!-- grants:BLOCK -->`` block."""
    text = DOC.read_text(encoding="utf-8")
    found = re.search(rf"<!-- grants:{block} -->\s*```sql\n(.*?)```", text, re.S)
    if not found:
        raise LookupError(f"docs/deployment.md has no <!-- grants:{block} --> sql block")
    lines = [line.split("--", 1)[0] for line in found.group(1).splitlines()]
    return [s.strip() for s in " ".join(lines).split(";") if s.strip()]


def fill(statement: str, *, owner: str, app: str, schema: str, database: str) -> str:
    """``statement`` with the doc's example names replaced by real ones."""
    names = dict(zip(DOC_NAMES, (owner, app, schema, database), strict=True))
    return re.sub(
        rf"\b({'|'.join(names)})\b",
        lambda m: sql.Identifier(names[m.group(1)]).as_string(),
        statement,
    )


def as_user(url: str, user: str) -> str:
    """``url`` (a postgresql:// URL or key=value DSN) logging in as ``user``."""
    if "://" not in url:
        return psycopg.conninfo.make_conninfo(url, user=user)
    scheme, rest = url.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    host = netloc.rsplit("@", 1)[-1]
    return f"{scheme}://{user}@{host}{sep}{tail}"


def create_schema(conn: psycopg.Connection[Any], name: str) -> None:
    """Make schema ``name`` unless it exists (a role tier made every test schema for its
    owner already, and the owner may not create schemas)."""
    row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (name,)).fetchone()
    if not row or not row[0]:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))


class Roles:
    """This session's owner and application roles, made through ``admin_url``."""

    def __init__(self, admin_url: str, mode: str) -> None:
        if mode not in MODES[1:]:
            raise ValueError(f"TENURE_TEST_ROLE={mode!r}: use one of owner, dml")
        self.admin_url = admin_url
        self.mode = mode
        suffix = uuid.uuid4().hex[:8]
        self.owner, self.app = f"tenure_owner_{suffix}", f"tenure_app_{suffix}"
        self.owner_url = as_user(admin_url, self.owner)
        self.app_url = as_user(admin_url, self.app)
        with self._admin() as conn:
            current = conn.execute("SELECT current_database()::text").fetchone()
            self.database = current[0] if current else ""
            self.run_doc(conn, "roles", "")
            row = conn.execute(
                "SELECT rolsuper, has_database_privilege(%s, current_database(), 'CREATE') "
                "FROM pg_roles WHERE rolname = %s",
                (self.owner, self.owner),
            ).fetchone()
        if row != (False, False):
            self.drop()
            raise RuntimeError(
                f"role {self.owner} is a superuser or may create schemas in the test "
                f"database (superuser, CREATE: {row}); the least-privilege tier needs neither"
            )

    @property
    def url(self) -> str:
        """The DSN tenure's code runs with in this tier."""
        return self.owner_url if self.mode == "owner" else self.app_url

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True)

    def run_doc(self, conn: psycopg.Connection[Any], block: str, schema: str) -> None:
        """Run docs/deployment.md's ``block`` on ``conn``, with these roles and ``schema``."""
        for statement in doc_statements(block):
            filled = fill(
                statement, owner=self.owner, app=self.app, schema=schema, database=self.database
            )
            conn.execute(filled.encode())

    def make_schema(self, name: str) -> None:
        """Make schema ``name`` for the owner; in the DML tier, migrate it as the owner
        and then give the application role its grants."""
        with self._admin() as conn:
            self.run_doc(conn, "schema", name)
        if self.mode != "dml":
            return
        from tenure._db import connect as dbconnect
        from tenure._db.migrate import migrate

        with dbconnect.connect(self.owner_url, "tenure-test-owner") as conn:
            migrate(conn, name)
        self.grant_app(name)

    def grant_database(self) -> None:
        """Give the owner CREATE on the database (the doc's other way to migrate)."""
        with self._admin() as conn:
            self.run_doc(conn, "database", "")

    def grant_app(self, name: str) -> None:
        """Give the application role its grants on schema ``name``, as its owner."""
        with psycopg.connect(self.owner_url, autocommit=True) as conn:
            self.run_doc(conn, "app", name)

    def drop(self) -> None:
        with self._admin() as conn:
            for role in (self.app, self.owner):
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    (role,),
                )
            roles = sql.SQL(", ").join([sql.Identifier(self.app), sql.Identifier(self.owner)])
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(roles))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(roles))
