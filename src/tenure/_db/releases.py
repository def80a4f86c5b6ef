"""Which releases a schema serves: schema versions that only go forward.

During a rolling deploy workers of two releases share one schema, and a rollback runs
the older release again after the newer one migrated. The rules that keep both
working (``docs/architecture.md``, Upgrades, has the whole of them):

- Every release that migrates a schema records itself in ``{schema}.releases``: its
  version, ``SERVES_FROM`` (the oldest release whose workers its schema still
  serves) and a digest of the schema's functions as it left them.
- Migrations only add what older releases ignore (expand). Removing or changing what
  an older release uses (contract) waits for a later release, which raises
  ``SERVES_FROM`` past it in the same change. A changed SQL function gets a new name;
  the old name keeps its old body until the contract step.
  ``tests/test_upgrade_contract.py`` holds each change to that against the previous
  release's schema.
- Code never replaces the functions of a newer release: an older release that
  migrates leaves them in place and says so.
- A release older than the newest one recorded runs if it is at least that one's
  ``serves_from``, and logs that it is older; otherwise it refuses to start, with one
  line naming both versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from tenure._db import sqlfiles
from tenure._version import __version__
from tenure.errors import SchemaTooNew

RELEASE = __version__
# The oldest release whose workers this release's schema still serves. Raise it only in
# a release whose migrations contract what that release used.
SERVES_FROM = "0.1.0"

# The record of the functions unit in the migrations table, ``functions.sql@<digest>``:
# the name dates from when it was one file, and stays, since every release reads
# records by it.
FUNCTIONS_UNIT = "functions.sql@"
_EXISTS = b"SELECT to_regclass(%(table)s) IS NOT NULL"


def table_exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(_EXISTS, {"table": f"{schema}.{table}"}).fetchone()
    return bool(row and row[0])


_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:(a|b|rc)(\d+))?(?:\.post(\d+))?(?:\.dev(\d+))?")
_PRE = {"a": 0, "b": 1, "rc": 2}
_UNKNOWN = (10**9,)


def version_key(version: str) -> tuple[int, ...]:
    """The order of release versions, as pip orders them: ``0.2.0.dev1`` < ``0.2.0a1``
    < ``0.2.0rc1`` < ``0.2.0`` < ``0.2.0.post1``; a local suffix (``+...``) is ignored.
    A version of any other shape sorts after every release, so a record this code
    cannot read counts as newer than it (and its ``serves_from`` is obeyed)."""
    m = _VERSION.fullmatch(version.split("+", 1)[0].strip())
    if m is None:
        return _UNKNOWN
    major, minor, patch, pre, pre_n, post, dev = m.groups()
    # a dev release of a final one comes before its pre-releases
    final = -1 if dev is not None and post is None else len(_PRE)
    rank = _PRE[pre] if pre else final
    dev_key = (0, int(dev)) if dev is not None else (1, 0)
    return (int(major), int(minor), int(patch), rank, int(pre_n or 0), int(post or -1), *dev_key)


@dataclass(frozen=True)
class Recorded:
    """One release that migrated the schema."""

    release: str
    serves_from: str
    functions: str  # digest of the schema's functions as this release left them
    migrated_at: datetime

    def serves(self, release: str) -> bool:
        return version_key(release) >= version_key(self.serves_from)


def recorded(conn: psycopg.Connection[Any], schema: str) -> list[Recorded]:
    """The releases that migrated ``schema``, oldest version first ([] before 0.2.0)."""
    if not table_exists(conn, schema, "releases"):
        return []
    rows = conn.execute(sqlfiles.query("releases_list", schema)).fetchall()
    found = [Recorded(str(r[0]), str(r[1]), str(r[2]), r[3]) for r in rows]
    return sorted(found, key=lambda r: (version_key(r.release), r.migrated_at))


def newer(found: list[Recorded], release: str = RELEASE) -> Recorded | None:
    """The newest recorded release if it is newer than ``release``."""
    if found and version_key(found[-1].release) > version_key(release):
        return found[-1]
    return None


def check_served(schema: str, found: list[Recorded], release: str = RELEASE) -> Recorded | None:
    """The newer release that migrated ``schema``, if any; raise :class:`SchemaTooNew`
    when it no longer serves ``release``."""
    top = newer(found, release)
    if top is not None and not top.serves(release):
        raise SchemaTooNew(
            f"schema {schema!r} was migrated by tenure {top.release}, which serves workers of "
            f"tenure {top.serves_from} and later; this is tenure {release}: upgrade it to "
            f"{top.serves_from} or later"
        )
    return top


def drifted(conn: psycopg.Connection[Any], schema: str, found: list[Recorded]) -> bool:
    """True when this release is the newest recorded and the functions installed are not
    the ones it left (re-applied by a release before 0.2.0, or edited by hand)."""
    mine = [r for r in found if r.release == RELEASE]
    return (
        bool(mine) and newer(found) is None and mine[-1].functions != functions_digest(conn, schema)
    )


def unrecorded(found: list[Recorded]) -> bool:
    """True when this release is the newest and has no record yet (a release that adds
    nothing to the schema finds nothing to apply, and still records itself)."""
    return newer(found) is None and all(r.release != RELEASE for r in found)


def functions_digest(conn: psycopg.Connection[Any], schema: str) -> str:
    row = conn.execute(sqlfiles.query("functions_digest", schema), {"schema": schema}).fetchone()
    return str(row[0]) if row else ""


def record(conn: psycopg.Connection[Any], schema: str) -> None:
    """Record that this release migrated ``schema``, with its functions as they are now."""
    conn.execute(
        sqlfiles.query("release_record", schema),
        {
            "release": RELEASE,
            "serves_from": SERVES_FROM,
            "functions": functions_digest(conn, schema),
        },
    )


@dataclass(frozen=True)
class SchemaStatus:
    """What ``tenure db status`` says of a schema: read only, changes nothing."""

    schema: str
    migrations: list[tuple[str, datetime]]  # numbered migrations applied, in order
    functions: list[tuple[str, datetime]]  # each application of a functions unit
    releases: list[Recorded]  # oldest version first
    digest: str  # the functions as installed now
    pending: list[str]  # what this release would apply
    release: str = RELEASE

    @property
    def newest(self) -> Recorded | None:
        return self.releases[-1] if self.releases else None

    def serves_this(self) -> bool:
        top = newer(self.releases, self.release)
        return top is None or top.serves(self.release)

    def functions_left_by(self) -> Recorded | None:
        """The newest release whose recorded functions are the ones installed now."""
        for r in reversed(self.releases):
            if r.functions == self.digest:
                return r
        return None


def schema_status(
    conn: psycopg.Connection[Any], schema: str, found: list[Recorded], pending: list[str]
) -> SchemaStatus:
    rows = conn.execute(sqlfiles.query("migrations_list", schema)).fetchall()
    return SchemaStatus(
        schema=schema,
        migrations=[(str(n), t) for n, t in rows if not str(n).startswith(FUNCTIONS_UNIT)],
        functions=[(str(n), t) for n, t in rows if str(n).startswith(FUNCTIONS_UNIT)],
        releases=found,
        digest=functions_digest(conn, schema),
        pending=pending,
    )
