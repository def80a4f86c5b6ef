"""The tasks: parse a document by its type, then index it, in one idempotent step.

``tenure worker examples.documents.app:reg`` runs them. Small documents run in the
worker's threads; large ones run in a child process with a hard timeout, so a
parser stuck on a huge or hostile file is killed on time without stalling the
worker. A corrupt file, or one with no text to index (a scanned PDF without a text
layer), is discarded at once (no retries: parsing it again cannot help) with the
parser's reason as the task's recorded error.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg_pool import ConnectionPool
from pydantic import BaseModel

import tenure
from examples.documents import index, parsers
from tenure import Discard, Registry

QUEUE = "documents"
#: Files at least this large are parsed in a child process, with a hard timeout.
LARGE_BYTES = 256 * 1024
#: Milliseconds each document waits before it is read: stands in for fetching it from
#: object storage. 0 unless set; ``make demo`` sets it so the run lasts long enough to watch.
FETCH_LATENCY_ENV = "TENURE_DOCS_FETCH_LATENCY_MS"

reg = Registry(schema=index.queue_schema())
reg.queue(QUEUE)


class Document(BaseModel):
    """A task's payload: where the file is and whose it is."""

    path: str
    source: str
    size: int = 0


class Indexed(BaseModel):
    """A task's result."""

    path: str
    doc_type: str
    title: str
    chars: int


_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()


def _connections() -> ConnectionPool:
    """This process's connections to the database the queue is in (made on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            pool = ConnectionPool(
                reg.client.dsn,
                min_size=1,
                max_size=4,
                kwargs={"autocommit": True, "application_name": "tenure-docs"},
                open=True,
            )
            with pool.connection() as conn:
                index.ensure_index(conn)
            _pool = pool
        return _pool


def parse_and_index(doc: Document) -> Indexed:
    """Extract ``doc``'s text and upsert it into the index."""
    latency = float(os.environ.get(FETCH_LATENCY_ENV) or 0)
    if latency > 0:
        time.sleep(latency / 1000)
    try:
        out = parsers.extract(doc.path)
    except parsers.CorruptDocument as exc:
        raise Discard(str(exc)) from None
    task_id: int | None = None
    try:
        task_id = tenure.current().id
    except tenure.TenureError:  # called directly, outside a worker
        pass
    with _connections().connection() as conn:
        index.upsert(
            conn,
            path=doc.path,
            source=doc.source,
            doc_type=out.doc_type,
            title=out.title,
            meta=out.meta,
            body=out.text,
            size=doc.size,
            task_id=task_id,
        )
    return Indexed(path=doc.path, doc_type=out.doc_type, title=out.title, chars=len(out.text))


@reg.task(queue=QUEUE, name="docs.parse", timeout=timedelta(seconds=30), max_attempts=3)
def parse_document(payload: Document) -> Indexed:
    """Parse and index one ordinary document (in a worker thread)."""
    return parse_and_index(payload)


@reg.task(
    queue=QUEUE,
    name="docs.parse_large",
    isolation="process",
    timeout=timedelta(seconds=90),
    max_attempts=3,
)
def parse_large_document(payload: Document) -> Indexed:
    """Parse and index one large document in a child process with a hard timeout."""
    return parse_and_index(payload)


class Watch(BaseModel):
    """A watched folder's schedule payload: the folder, and how often it ticks."""

    folder: str
    every_seconds: float
    source: str | None = None


@reg.task(queue=QUEUE, name="docs.reingest", max_attempts=3)
def reingest_folder(payload: Watch) -> int:
    """One tick of a watched folder (``tenure-docs watch``): enqueue its documents
    changed in this tick's period, from the tick before this one up to this one. The
    tick is the schedule's, not the moment the task runs, so a tick run late or caught
    up after downtime covers its own period, and each change falls in one period (a
    file written after the tick, before its task ran, is the next tick's). A file's
    time is the clock of the machine that wrote it, the tick the database's: keep them
    in step (NTP), as for any tool that compares modification times."""
    from examples.documents import ingest as ingesting

    tick = tenure.current().tick or datetime.now(UTC)
    since = tick - timedelta(seconds=payload.every_seconds)
    found = ingesting.ingest(payload.folder, source=payload.source, changed=(since, tick))
    return found.sent


def task_for(size: int) -> Any:
    """The task a document of ``size`` bytes is sent to."""
    return parse_large_document if size >= LARGE_BYTES else parse_document
