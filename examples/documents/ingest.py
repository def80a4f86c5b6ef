"""Walk a folder and enqueue one task per document, with ``partition_key`` = its source.

The source (tenant) of a file is the first folder under the root it sits in, or
the root's own name for files directly in it: point ``tenure-docs ingest`` at a
folder of folders (one per team, customer or bucket) and each gets a fair share of
the fleet however much the others queue.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from examples.documents import app, index, parsers

BATCH = 250
Period = tuple[datetime, datetime]  # from, up to (not including)


@dataclass(frozen=True)
class Found:
    path: str
    source: str
    size: int


@dataclass
class IngestReport:
    sent: int = 0
    task_ids: list[int] = field(default_factory=list)
    by_source: Counter[str] = field(default_factory=Counter)
    large: int = 0
    skipped: int = 0  # files of a type we do not parse


def walk(
    root: Path | str, source: str | None = None, changed: Period | None = None
) -> Iterator[Found | None]:
    """Every file under ``root`` (hidden ones left out; with ``changed``, only those
    modified from its start up to, not including, its end); None for an unsupported type."""
    period = None if changed is None else (changed[0].timestamp(), changed[1].timestamp())
    base = Path(root).resolve()
    if base.is_file():
        found = _found(base, source or base.parent.name, period)
        if found is not UNCHANGED:
            yield found
        return
    for folder, dirs, files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(base)
        owner = source or (rel.parts[0] if rel.parts else base.name)
        for name in sorted(files):
            if not name.startswith("."):
                found = _found(Path(folder) / name, owner, period)
                if found is not UNCHANGED:
                    yield found


UNCHANGED = Found("", "", -1)  # a file not modified in the period asked about


def _found(path: Path, source: str, period: tuple[float, float] | None = None) -> Found | None:
    if parsers.doc_type_of(path) is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return Found(str(path), source, 0)
    if period is not None and not period[0] <= stat.st_mtime < period[1]:
        return UNCHANGED
    return Found(str(path), source, stat.st_size)


def ingest(
    root: Path | str,
    *,
    source: str | None = None,
    changed: Period | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Enqueue every supported file under ``root`` (modified in the period ``changed``,
    if given); ``progress(done, total)`` as it goes."""
    report = IngestReport()
    found: list[Found] = []
    for item in walk(root, source, changed):
        if item is None:
            report.skipped += 1
        else:
            found.append(item)
    with psycopg.connect(app.reg.client.dsn, autocommit=True) as conn:
        index.ensure_index(conn)
    groups: dict[tuple[bool, str], list[Found]] = {}
    for item in found:
        groups.setdefault((item.size >= app.LARGE_BYTES, item.source), []).append(item)
    if progress:
        progress(0, len(found))
    # Interleave the sources batch by batch, as a crawler feeding the queue would.
    pending = {key: items for key, items in sorted(groups.items())}
    while pending:
        for key in list(pending):
            items = pending[key]
            chunk, pending[key] = items[:BATCH], items[BATCH:]
            if not pending[key]:
                del pending[key]
            large, owner = key
            task = app.parse_large_document if large else app.parse_document
            handles = task.send_many(
                [{"path": f.path, "source": f.source, "size": f.size} for f in chunk],
                partition_key=owner,
            )
            report.task_ids.extend(h.id for h in handles)
            report.sent += len(chunk)
            report.by_source[owner] += len(chunk)
            report.large += len(chunk) if large else 0
            if progress:
                progress(report.sent, len(found))
    return report


TASK_NAMES = (app.parse_document.name, app.parse_large_document.name)


def outcomes(conn: psycopg.Connection[Any], task_ids: list[int] | None = None) -> dict[str, Any]:
    """Finished documents: counts by state, and every failed one's path and reason."""
    schema = sql.Identifier(index.queue_schema())
    where: sql.Composable = sql.SQL("task_name = ANY(%(names)s)")
    if task_ids is not None:
        where = sql.SQL("{} AND id = ANY(%(ids)s)").format(where)
    params = {"names": list(TASK_NAMES), "ids": task_ids or []}
    rows = conn.execute(
        sql.SQL("SELECT state, count(*) FROM {}.finished_tasks WHERE {} GROUP BY state").format(
            schema, where
        ),
        params,
    ).fetchall()
    failed = conn.execute(
        sql.SQL(
            "SELECT payload->>'path', state, last_error FROM {}.finished_tasks "
            "WHERE {} AND state <> 'succeeded' ORDER BY payload->>'path'"
        ).format(schema, where),
        params,
    ).fetchall()
    return {
        "states": {str(r[0]): int(r[1]) for r in rows},
        "failed": [(str(r[0]), str(r[1]), str(r[2] or "")) for r in failed],
    }


def waiting(conn: psycopg.Connection[Any]) -> int:
    """Documents queued, scheduled or running."""
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.tasks WHERE task_name = ANY(%s)").format(
            sql.Identifier(index.queue_schema())
        ),
        (list(TASK_NAMES),),
    ).fetchone()
    return int(row[0]) if row else 0
