"""The expand/contract rule, checked on the catalog: what a release's migrations may do
to a schema while the previous release's workers still run on it.

:func:`breaking_changes` compares the catalog a schema had under the previous release
with the one it has after this release migrated it in place, and names everything
the previous release's code could trip on: a table, column, sequence, trigger or
unique index it uses gone; a column's type changed or made NOT NULL; a new column
it does not know of that its INSERTs would leave NULL against a NOT NULL; a new
constraint its writes may break; a function it calls gone, or its result or body
changed (a changed function takes a new name; the old name keeps its old body until
the contract step). Additions it ignores are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

_COLUMNS = """
SELECT c.table_name, c.column_name, c.data_type, c.is_nullable = 'YES', c.column_default
FROM information_schema.columns c
JOIN information_schema.tables t
  ON t.table_schema = c.table_schema AND t.table_name = c.table_name
WHERE c.table_schema = %(s)s AND t.table_type = 'BASE TABLE'"""
_FUNCTIONS = """
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       pg_get_function_result(p.oid), p.prosrc
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(s)s"""
_CONSTRAINTS = """
SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
WHERE n.nspname = %(s)s AND c.conrelid <> 0"""
_UNIQUE_INDEXES = """
SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND i.indisunique"""
_TRIGGERS = """
SELECT c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND NOT t.tgisinternal"""
_SEQUENCES = "SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = %(s)s"


@dataclass(frozen=True)
class Catalog:
    """What a schema holds that a release's code reads, writes or calls."""

    columns: dict[tuple[str, str], tuple[str, bool, str | None]]  # type, nullable, default
    functions: dict[str, tuple[str, str]]  # name(args) -> result, body
    constraints: dict[tuple[str, str], str]  # (table, name) -> definition
    unique_indexes: dict[str, str]
    triggers: dict[str, str]
    sequences: set[str]

    @property
    def tables(self) -> set[str]:
        return {table for table, _ in self.columns}


def read_catalog(conn: psycopg.Connection[Any], schema: str) -> Catalog:
    def rows(query: str) -> list[tuple[Any, ...]]:
        return conn.execute(query, {"s": schema}).fetchall()

    return Catalog(
        columns={(t, c): (typ, bool(null), default) for t, c, typ, null, default in rows(_COLUMNS)},
        functions={sig: (result, body) for sig, result, body in rows(_FUNCTIONS)},
        constraints={(t, name): d for t, name, d in rows(_CONSTRAINTS)},
        unique_indexes=dict(rows(_UNIQUE_INDEXES)),
        triggers=dict(rows(_TRIGGERS)),
        sequences={r[0] for r in rows(_SEQUENCES)},
    )


def breaking_changes(prev: Catalog, cur: Catalog) -> list[str]:
    """What in ``cur`` the code that ran on ``prev`` could break on, one line each."""
    out: list[str] = []
    out += [f"table {t} is gone" for t in sorted(prev.tables - cur.tables)]
    for key, (typ, nullable, _default) in sorted(prev.columns.items()):
        table, column = key
        if table not in cur.tables:
            continue
        if key not in cur.columns:
            out.append(f"column {table}.{column} is gone")
            continue
        ctyp, cnull, cdefault = cur.columns[key]
        if ctyp != typ:
            out.append(f"column {table}.{column} changed type: {typ} -> {ctyp}")
        if nullable and not cnull:
            out.append(f"column {table}.{column} became NOT NULL")
        if not cnull and cdefault is None and _default is not None:
            out.append(f"column {table}.{column} lost its default and is NOT NULL")
    for key, (_typ, nullable, default) in sorted(cur.columns.items()):
        table, column = key
        if table in prev.tables and key not in prev.columns and not nullable and default is None:
            out.append(
                f"new column {table}.{column} is NOT NULL without a default: the previous "
                "release's inserts leave it out"
            )
    for sig, (result, body) in sorted(prev.functions.items()):
        if sig not in cur.functions:
            out.append(f"function {sig} is gone")
        elif cur.functions[sig][0] != result:
            out.append(f"function {sig} changed its result: {result} -> {cur.functions[sig][0]}")
        elif cur.functions[sig][1] != body:
            out.append(
                f"function {sig} changed its body: a changed function takes a new name, and "
                "the old name keeps its body until the contract step"
            )
    for key, definition in sorted(cur.constraints.items()):
        table, name = key
        if table.split(".")[-1] in {t for t in prev.tables} and key not in prev.constraints:
            out.append(f"new constraint {name} on {table} ({definition})")
        elif key in prev.constraints and prev.constraints[key] != definition:
            out.append(f"constraint {name} on {table} changed: {definition}")
    out += [
        f"unique index {i} is gone"
        for i in sorted(set(prev.unique_indexes) - set(cur.unique_indexes))
    ]
    out += [f"trigger {t} is gone" for t in sorted(set(prev.triggers) - set(cur.triggers))]
    out += [f"sequence {s} is gone" for s in sorted(prev.sequences - cur.sequences)]
    return out
