"""The expand/contract rule, checked on the catalog: what a release's migrations may do
to a schema while the previous release's workers still run on it.

:func:`breaking_changes` compares the catalog a schema had under the previous release
with the one it has after this release migrated it in place, and names everything
the previous release's code could trip on:

- a table, column, sequence, trigger or unique index it uses gone or redefined;
- a column's type changed (with its modifiers: ``varchar(n)``, array element types) or
  made NOT NULL, or a NOT NULL column that lost its default;
- a new column its INSERTs leave out that is NOT NULL without a default;
- a new constraint, unique index or trigger on its tables, unless it touches only
  new columns (its writes leave those at their defaults);
- a function it calls gone or redefined (result, argument defaults, volatility,
  settings or body: a changed function takes a new name, and the old name keeps its
  definition until the contract step), or a new overload of a name it calls (its
  calls could then be ambiguous).

Additions it ignores are allowed: tables, nullable or defaulted columns, plain
indexes, functions under new names. NOT NULL constraints that PostgreSQL 18 lists in
``pg_constraint`` are the columns' nullability, compared as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = %(s)s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped"""
_FUNCTIONS = """
SELECT p.proname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       pg_get_function_result(p.oid), pg_get_functiondef(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(s)s AND p.prokind IN ('f', 'p')"""
_CONSTRAINTS = """
SELECT t.relname, c.conname, pg_get_constraintdef(c.oid),
       coalesce(array(SELECT a.attname FROM pg_attribute a
                      WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)), '{}')
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %(s)s AND c.contype <> 'n'"""
_UNIQUE_INDEXES = """
SELECT ic.relname, t.relname, pg_get_indexdef(i.indexrelid),
       array(SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %(s)s AND i.indisunique"""
_TRIGGERS = """
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND NOT t.tgisinternal"""
_SEQUENCES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND c.relkind = 'S'"""


@dataclass(frozen=True)
class Catalog:
    """What a schema holds that a release's code reads, writes or calls."""

    columns: dict[tuple[str, str], tuple[str, bool, str | None]]  # type, nullable, default
    functions: dict[str, tuple[str, str, str]]  # name(args) -> name, result, definition
    constraints: dict[tuple[str, str], tuple[str, frozenset[str]]]  # -> definition, columns
    unique_indexes: dict[str, tuple[str, str, frozenset[str]]]  # -> table, definition, columns
    triggers: dict[tuple[str, str], str]  # (table, trigger) -> definition
    sequences: set[str]

    @property
    def tables(self) -> set[str]:
        return {table for table, _ in self.columns}

    @property
    def function_names(self) -> set[str]:
        return {name for name, _, _ in self.functions.values()}


def read_catalog(conn: psycopg.Connection[Any], schema: str) -> Catalog:
    def rows(query: str) -> list[tuple[Any, ...]]:
        return conn.execute(query, {"s": schema}).fetchall()

    return Catalog(
        columns={(t, c): (typ, bool(null), d) for t, c, typ, null, d in rows(_COLUMNS)},
        functions={sig: (name, result, d) for name, sig, result, d in rows(_FUNCTIONS)},
        constraints={(t, c): (d, frozenset(cols)) for t, c, d, cols in rows(_CONSTRAINTS)},
        unique_indexes={i: (t, d, frozenset(cols)) for i, t, d, cols in rows(_UNIQUE_INDEXES)},
        triggers={(t, g): d for t, g, d in rows(_TRIGGERS)},
        sequences={r[0] for r in rows(_SEQUENCES)},
    )


def breaking_changes(prev: Catalog, cur: Catalog) -> list[str]:
    """What in ``cur`` the code that ran on ``prev`` could break on, one line each."""
    out: list[str] = []
    old_tables = prev.tables

    def only_new_columns(table: str, columns: frozenset[str]) -> bool:
        return bool(columns) and all((table, c) not in prev.columns for c in columns)

    out += [f"table {t} is gone" for t in sorted(old_tables - cur.tables)]
    for (table, column), (typ, nullable, default) in sorted(prev.columns.items()):
        if table not in cur.tables:
            continue
        if (table, column) not in cur.columns:
            out.append(f"column {table}.{column} is gone")
            continue
        ctyp, cnull, cdefault = cur.columns[(table, column)]
        if ctyp != typ:
            out.append(f"column {table}.{column} changed type: {typ} -> {ctyp}")
        if nullable and not cnull:
            out.append(f"column {table}.{column} became NOT NULL")
        if not cnull and cdefault is None and default is not None:
            out.append(f"column {table}.{column} lost its default and is NOT NULL")
    for (table, column), (_typ, nullable, default) in sorted(cur.columns.items()):
        new = table in old_tables and (table, column) not in prev.columns
        if new and not nullable and default is None:
            out.append(
                f"new column {table}.{column} is NOT NULL without a default: the previous "
                "release's inserts leave it out"
            )
    for sig, (_name, result, definition) in sorted(prev.functions.items()):
        if sig not in cur.functions:
            out.append(f"function {sig} is gone")
        elif cur.functions[sig][1] != result:
            out.append(f"function {sig} changed its result: {result} -> {cur.functions[sig][1]}")
        elif cur.functions[sig][2] != definition:
            out.append(
                f"function {sig} changed its definition: a changed function takes a new "
                "name, and the old name keeps its definition until the contract step"
            )
    for sig, (name, _result, _definition) in sorted(cur.functions.items()):
        if sig not in prev.functions and name in prev.function_names:
            out.append(
                f"function {sig} is a new overload of {name}, which the previous release calls"
            )
    for (table, name), (definition, columns) in sorted(cur.constraints.items()):
        before = prev.constraints.get((table, name))
        if before is None:
            if table in old_tables and not only_new_columns(table, columns):
                out.append(f"new constraint {name} on {table}: {definition}")
        elif before[0] != definition:
            out.append(f"constraint {name} on {table} changed: {before[0]} -> {definition}")
    for index, (table, definition, columns) in sorted(cur.unique_indexes.items()):
        before = prev.unique_indexes.get(index)
        if before is None:
            if table in old_tables and not only_new_columns(table, columns):
                out.append(f"new unique index {index} on {table}: {definition}")
        elif before[1] != definition:
            out.append(f"unique index {index} changed: {before[1]} -> {definition}")
    out += [
        f"unique index {i} is gone"
        for i in sorted(set(prev.unique_indexes) - set(cur.unique_indexes))
    ]
    for (table, trigger), definition in sorted(cur.triggers.items()):
        before = prev.triggers.get((table, trigger))
        if before is None and table in old_tables:
            out.append(f"new trigger {trigger} on {table}: {definition}")
        elif before is not None and before != definition:
            out.append(f"trigger {trigger} on {table} changed: {definition}")
    out += [
        f"trigger {g} on {t} is gone" for t, g in sorted(set(prev.triggers) - set(cur.triggers))
    ]
    out += [f"sequence {s} is gone" for s in sorted(prev.sequences - cur.sequences)]
    return out
