"""Load the project's ``.sql`` files and bind them to a schema.

Every statement lives in a file under ``queries/`` or ``migrations/``, and every SQL
function in a file under ``functions/``. The text may name ``{schema}`` (replaced by
the quoted schema identifier) and ``{channel}`` (the quoted NOTIFY channel of that
schema); a function file may also name a part, ``{finish_ended}`` for the statement in
``functions/finish_ended.sql``. Values are always bound parameters.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from psycopg import sql

from tenure.errors import ConfigError

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


def check_schema(schema: str) -> str:
    """Return ``schema`` if it is a plain lower-case identifier, else raise ConfigError."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"schema: {schema!r} is not a plain identifier; use lower-case letters, digits and _"
        )
    return schema


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which a schema's queues are woken."""
    return f"tenure_{schema}"


@cache
def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def _compose(text: str, schema: str, **parts: sql.Composable) -> sql.Composed:
    return sql.SQL(text).format(
        schema=sql.Identifier(check_schema(schema)),
        channel=sql.Literal(channel_name(schema)),
        **parts,
    )


@cache
def bind(package: str, name: str, schema: str) -> bytes:
    """The text of ``package/name`` with ``{schema}`` and ``{channel}`` filled in."""
    return _compose(_read(package, name), schema).as_string().encode()


def query(name: str, schema: str) -> bytes:
    """The named statement ``queries/<name>.sql`` bound to ``schema``."""
    return bind("tenure._db.queries", f"{name}.sql", schema)


def migration_names() -> list[str]:
    """Numbered migration files in the order they apply."""
    files = resources.files("tenure._db.migrations").iterdir()
    return sorted(f.name for f in files if f.name.endswith(".sql") and f.name[:4].isdigit())


def migration(name: str, schema: str) -> bytes:
    return bind("tenure._db.migrations", name, schema)


def schema_sql(schema: str) -> bytes:
    """``schema.sql``: the tables the migrations must produce, bound to ``schema``."""
    return bind("tenure._db", "schema.sql", schema)


_FUNCTIONS = "tenure._db.functions"


def _function_dir(numbered: bool) -> list[str]:
    files = resources.files(_FUNCTIONS).iterdir()
    names = (f.name for f in files if f.name.endswith(".sql"))
    return sorted(n for n in names if n[:2].isdigit() == numbered)


def function_files() -> list[str]:
    """The files under ``functions/`` that create functions, in the order they apply."""
    return _function_dir(numbered=True)


def _part(name: str, schema: str) -> sql.Composed:
    """``functions/<name>``, a statement that function files name as ``{<stem>}``,
    without its opening comment."""
    lines = _read(_FUNCTIONS, name).rstrip().splitlines()
    while lines and (not lines[0].strip() or lines[0].startswith("--")):
        del lines[0]
    return _compose("\n".join(lines), schema)


@cache
def functions_sql(schema: str) -> bytes:
    """Every SQL function, bound to ``schema``: the files of :func:`function_files` in
    order, as one text, with each unnumbered file's statement filled in where a file
    names it (``{finish_ended}`` is ``finish_ended.sql``). It is applied, hashed and
    recorded as one unit."""
    parts = {name.removesuffix(".sql"): _part(name, schema) for name in _function_dir(False)}
    texts = (_compose(_read(_FUNCTIONS, name), schema, **parts) for name in function_files())
    return "\n".join(text.as_string() for text in texts).encode()
