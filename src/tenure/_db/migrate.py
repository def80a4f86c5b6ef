"""Numbered SQL migrations, applied safely by many processes at once.

Every process that starts (a worker, a sender, the CLI) may call :func:`migrate`.
The whole run happens in one transaction under a transaction-scoped advisory lock
keyed on the schema, so concurrent callers queue behind the first one and then find
nothing left to do. After the numbered migrations, the functions (every file under
``functions/``, in order, as one text of ``CREATE OR REPLACE``) are applied again
whenever that text changed; they are recorded as ``functions.sql@<sha256>``, the name
every release gives the unit. ``schema.sql`` plus the functions is the schema the
migrations must produce; a test proves they do.

Schema versions only go forward (:mod:`tenure._db.releases`): a release that migrates
records itself; a release older than the newest one recorded applies no functions
(the newer release's stay), runs if that release still serves it and says it is
older, and refuses with one line naming both releases if not. The newest release
applies its functions again when what is installed is no longer what it left.

Commands that only read or operate on existing rows never migrate: they call
:func:`check_ready`, which reads the catalogs and the migrations table and changes
nothing.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from tenure._db import releases, sqlfiles
from tenure._db.connect import describe, is_transient
from tenure.errors import DatabaseError, SchemaNotReady

log = logging.getLogger(__name__)

_LOCK = b"SELECT pg_advisory_xact_lock(hashtext('tenure.migrate'), hashtext(%(schema)s))"
# Read after the lock, as its own statement: locking pg_namespace makes this backend
# take in the catalog changes committed while it waited (an advisory lock does not),
# so it counts a schema the previous holder created. Without it, a pooled server
# connection that looked the schema up before (another client's pending(), through a
# warm PgBouncer) still answers "no such schema" from its cache and the CREATE SCHEMA
# fails on pg_namespace's unique index. The schema is created only when this count
# finds none: CREATE SCHEMA, even with IF NOT EXISTS, needs CREATE on the database,
# which the owner of a schema made for it beforehand need not have.
_CATALOG_SYNC = b"SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s"


def _applied(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    if not releases.table_exists(conn, schema, "migrations"):
        return set()
    table = sqlfiles.bind("tenure._db.queries", "migrations_applied.sql", schema)
    return {r[0] for r in conn.execute(table).fetchall()}


_FUNCTIONS = releases.FUNCTIONS_UNIT


def _functions_version(schema: str) -> str:
    digest = hashlib.sha256(sqlfiles.functions_sql(schema)).hexdigest()[:16]
    return f"{_FUNCTIONS}{digest}"


def pending(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Migrations not yet applied to ``schema`` (the functions file last; never the
    functions when a newer release migrated it)."""
    return _pending(conn, schema, releases.recorded(conn, schema))


def _pending(
    conn: psycopg.Connection[Any], schema: str, found: list[releases.Recorded]
) -> list[str]:
    done = _applied(conn, schema)
    names = [name for name in sqlfiles.migration_names() if name not in done]
    if releases.newer(found) is None:
        unit = _functions_version(schema)
        if unit not in done or releases.drifted(conn, schema, found):
            names.append(unit)
    return names


def migrate(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Apply every pending migration to ``schema``; return the names applied.

    A failure other than a lost connection is raised as :class:`DatabaseError`
    with one line naming the migration.
    """
    sqlfiles.check_schema(schema)
    try:
        return _migrate(conn, schema)
    except psycopg.Error as exc:
        if is_transient(exc):  # the caller's retry decides, by the same rule as elsewhere
            raise
        raise _refused(conn, schema, exc) from exc


def _refused(conn: psycopg.Connection[Any], schema: str, exc: psycopg.Error) -> DatabaseError:
    """The one-line error for a migration the database refused."""
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        return DatabaseError(
            f"cannot migrate schema {schema!r}: {describe(exc)}; {_grant_hint(conn, schema)}"
        )
    return DatabaseError(
        f"cannot migrate schema {schema!r}: {describe(exc)}; is it another application's "
        "schema? pick another with schema=..."
    )


def _grant_hint(conn: psycopg.Connection[Any], schema: str) -> str:
    """What to grant, or who must migrate, when a migration was refused a privilege."""
    try:
        row = conn.execute(
            sqlfiles.query("migrate_privileges", schema), {"schema": schema}
        ).fetchone()
    except psycopg.Error:
        row = None
    if row is None:
        return "see the grants each role needs in docs/deployment.md (Roles and grants)"
    user, database, exists, owner, owns, _may_create = row
    role, db, name = (sql.Identifier(v).as_string() for v in (user, database, schema))
    if not exists:
        return (
            f"role {user} may not create schemas in database {database}: create it for the "
            f"role first (CREATE SCHEMA {name} AUTHORIZATION {role}) or GRANT CREATE ON "
            f"DATABASE {db} TO {role}"
        )
    if not owns:
        return (
            f"the schema belongs to role {owner}: run `tenure db migrate --schema {schema}` as "
            f"{owner} first, and give role {user} the grants in docs/deployment.md (Roles and "
            "grants)"
        )
    return (
        f"role {user} owns the schema but not the object named above: run migrations as that "
        f"object's owner, or ALTER its OWNER TO {role}"
    )


def _migrate(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    found = releases.recorded(conn, schema)
    if not _pending(conn, schema, found):
        top = releases.check_served(schema, found)
        if releases.unrecorded(found):
            releases.record(conn, schema)
        _older(schema, top)
        return []
    applied: list[str] = []
    with conn.transaction():
        conn.execute(_LOCK, {"schema": schema})
        exists = conn.execute(_CATALOG_SYNC, {"schema": schema}).fetchone()
        if not exists or not exists[0]:
            conn.execute(sqlfiles.query("schema_create", schema))
        conn.execute(sqlfiles.bind("tenure._db.queries", "migrations_table.sql", schema))
        found = releases.recorded(conn, schema)
        top = releases.check_served(schema, found)
        for name in _pending(conn, schema, found):
            if name.startswith(_FUNCTIONS):
                conn.execute(sqlfiles.functions_sql(schema))
            else:
                conn.execute(sqlfiles.migration(name, schema))
            conn.execute(
                sqlfiles.bind("tenure._db.queries", "migration_record.sql", schema),
                {"name": name},
            )
            applied.append(name)
        if top is None and (applied or releases.unrecorded(found)):
            releases.record(conn, schema)
    if applied:
        log.info("schema_migrated schema=%s applied=%s", schema, ",".join(applied))
    _older(schema, top)
    return applied


def _older(schema: str, top: releases.Recorded | None) -> None:
    if top is not None:
        log.warning(
            "schema_newer schema=%s release=%s this=%s: a newer release migrated this "
            "schema and still serves this one; its functions stay in place",
            schema,
            top.release,
            releases.RELEASE,
        )


def check_ready(conn: psycopg.Connection[Any], schema: str) -> None:
    """Raise :class:`SchemaNotReady` unless ``schema`` exists, this role may use it and
    every numbered migration of this code is applied, and :class:`SchemaTooNew` when a
    newer release migrated it and no longer serves this one. Reads only; never creates
    anything.

    Functions of another release are accepted: the tables are what reading needs.
    """
    sqlfiles.check_schema(schema)
    try:
        access = conn.execute(sqlfiles.query("schema_access", schema), {"schema": schema})
        row = access.fetchone()
        if row is None:
            raise SchemaNotReady(
                f"no tenure schema {schema!r} in this database; check --schema, or run "
                "`tenure db migrate` (or start a worker) to create it"
            )
        usable, has_tables = row
        if not usable:
            raise _denied(schema)
        if not has_tables:
            raise SchemaNotReady(
                f"schema {schema!r} holds no tenure tables; check --schema (is it another "
                "application's schema?), or run `tenure db migrate` if tenure should use it"
            )
        done = {r[0] for r in conn.execute(sqlfiles.query("migrations_applied", schema))}
        found = releases.recorded(conn, schema)
    except pgerrors.InsufficientPrivilege as exc:
        raise _denied(schema) from exc
    except psycopg.Error as exc:
        if is_transient(exc):  # retried by the caller
            raise
        raise DatabaseError(f"cannot read schema {schema!r}: {describe(exc)}") from exc
    releases.check_served(schema, found)
    missing = [name for name in sqlfiles.migration_names() if name not in done]
    if missing:
        raise SchemaNotReady(
            f"schema {schema!r} lacks migrations this tenure needs ({', '.join(missing)}); "
            "run `tenure db migrate` or start a worker of this release to apply them"
        )


def status(conn: psycopg.Connection[Any], schema: str) -> tuple[bool, releases.SchemaStatus | None]:
    """Whether the schema exists, and what it holds and whom it serves (None: it holds
    no tenure tables yet). Reads only."""
    sqlfiles.check_schema(schema)
    row = conn.execute(_CATALOG_SYNC, {"schema": schema}).fetchone()
    if not row or not row[0]:
        return False, None
    if not releases.table_exists(conn, schema, "migrations"):
        return True, None
    found = releases.recorded(conn, schema)
    return True, releases.schema_status(conn, schema, found, _pending(conn, schema, found))


def _denied(schema: str) -> SchemaNotReady:
    return SchemaNotReady(
        f"permission denied for schema {schema!r}; grant USAGE on it (and SELECT on its "
        "tables) to this role, or use a role that can read it"
    )
