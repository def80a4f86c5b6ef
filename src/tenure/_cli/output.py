"""How the command line prints: tables that fit the terminal, and ``--json``.

A table never cuts a header: each column is at least as wide as its header; columns
that hold long text (task names, paths, errors) fold onto more lines; and when even
that does not fit, the least important columns are left out and a last line names
them (``--json`` always has every field).

Every string read from the database is printed through :func:`tenure._untrusted.inert`
and as rich ``Text`` (:func:`shown`): its control characters show as ``\\x1b``-style
escapes and its brackets as brackets. ``--json`` prints one JSON document with ASCII
escapes (``\\u001b``) for everything else, so it is inert as well.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from tenure._untrusted import inert

if TYPE_CHECKING:  # rich is imported when a table is printed, not at start-up
    from rich.console import Console


@dataclass(frozen=True)
class Column:
    """One table column. ``drop``: 0 is always shown; a higher one is left out sooner
    when the terminal is narrow. ``wrap``: its cells may fold onto more lines."""

    header: str
    numeric: bool = False
    wrap: bool = False
    drop: int = 0


def shown(text: str, *, lines: bool = False) -> Any:
    """A database string as rich prints it: inert, and never read as markup."""
    from rich.text import Text

    return Text(inert(text, lines=lines))


def console() -> Console:
    from rich.console import Console

    return Console()


WRAP_MIN = 12
"""The narrowest a folding column is made (or its header, if longer)."""


def _build(title: str, columns: list[Column], widths: list[int], rows: list[list[str]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col, width in zip(columns, widths, strict=True):
        table.add_column(
            col.header,
            justify="right" if col.numeric else "left",
            width=width,
            no_wrap=not col.wrap,
            overflow="fold",
        )
    for row in rows:
        table.add_row(*(shown(cell) for cell in row))
    return table


def _widths(columns: list[Column], rows: list[list[str]], room: int) -> list[int] | None:
    """Each column's width within ``room`` characters of cells, or None if they
    cannot all fit: a column that does not fold gets its widest cell; folding ones
    share what is left, each at least ``WRAP_MIN`` (or its header)."""
    from rich.cells import cell_len

    natural = [
        max([cell_len(c.header)] + [cell_len(inert(r[i])) for r in rows])
        for i, c in enumerate(columns)
    ]
    least = [
        max(cell_len(c.header), min(n, WRAP_MIN)) if c.wrap else n
        for c, n in zip(columns, natural, strict=True)
    ]
    if sum(least) > room:
        return None
    widths = list(least)
    spare = room - sum(widths)
    while spare > 0:  # widen the folding columns that want it, one character at a time
        wanting = [i for i, c in enumerate(columns) if c.wrap and widths[i] < natural[i]]
        if not wanting:
            break
        for i in wanting[:spare]:
            widths[i] += 1
        spare = room - sum(widths)
    return widths


def fit_table(
    out: Console, title: str, columns: list[Column], rows: list[list[str]]
) -> tuple[Any, list[str]]:
    """The table for the width of ``out`` (a rich Console), and the headers left out."""
    keep = list(range(len(columns)))
    while True:
        kept = [columns[i] for i in keep]
        cells = [[r[i] for i in keep] for r in rows]
        widths = _widths(kept, cells, out.width - 3 * len(kept) - 1)  # borders and padding
        droppable = [i for i in keep if columns[i].drop > 0]
        if widths is not None or not droppable:
            if widths is None:  # nothing left to drop: let rich squeeze it
                widths = [max(len(c.header), 1) for c in kept]
            hidden = [c.header for i, c in enumerate(columns) if i not in keep]
            return _build(title, kept, widths, cells), hidden
        # the highest drop first; of equals, the rightmost
        keep.remove(max(droppable, key=lambda i: (columns[i].drop, i)))


def print_table(out: Console, title: str, columns: list[Column], rows: list[list[str]]) -> None:
    """Print a table that fits ``out``; say which columns it left out, if any."""
    table, hidden = fit_table(out, title, columns, rows)
    out.print(table)
    if hidden:
        out.print(f"({', '.join(hidden)}: left out at this width; --json has every field)")


def json_option(f: Any) -> Any:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document (stable keys)."
    )(f)


def emit_json(document: Any) -> None:
    """One JSON document on stdout: ASCII only, so no byte of it is a terminal code;
    timestamps in ISO 8601 with their offset."""
    click.echo(json.dumps(document, default=_plain, ensure_ascii=True))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def iso(value: datetime | None) -> str | None:
    """A timestamp for JSON: ISO 8601 with its offset, or None."""
    return None if value is None else value.isoformat()


def when(value: datetime | None) -> str:
    """A timestamp as a table shows it: local time to the second, or ``-``."""
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def json_block(value: Any) -> Any:
    """A payload or result, indented and coloured as JSON, inert."""
    from rich.syntax import Syntax

    return Syntax(inert(json.dumps(value, indent=2, default=str), lines=True), "json")
