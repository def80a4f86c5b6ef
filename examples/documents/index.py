"""The search index: one PostgreSQL table with a ``tsvector`` column and a GIN index.

It lives in the app's own schema, next to (not inside) tenure's. Writes are upserts
keyed on the file's path, so a document parsed twice (a worker died after indexing
but before its outcome was recorded) still has exactly one row: at-least-once
delivery, exactly-once effect. ``runs`` counts how often a row was written, which
is how the demo shows duplicates that changed nothing.

Words are cut at Unicode punctuation before PostgreSQL's text search sees them
(:data:`SEPARATORS`): in a database of the C locale (the embedded server's) its parser
takes every non-ASCII character for a letter, so ``「在庫管理」の`` or ``„im Frühjahr“``
would each be one word and a search for 在庫管理 or Frühjahr would miss them. Queries
are cut the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

ENV_SCHEMA = "TENURE_DOCS_SCHEMA"
DEFAULT_SCHEMA = "tenure_docs"


def queue_schema() -> str:
    """tenure's schema for this app (``TENURE_DOCS_SCHEMA``, default ``tenure_docs``)."""
    return os.environ.get(ENV_SCHEMA) or DEFAULT_SCHEMA


def index_schema() -> str:
    """The app's own schema, holding the search index."""
    return f"{queue_schema()}_index"


#: Unicode punctuation, spaces and symbols, as a PostgreSQL regular expression (ASCII
#: escapes): Latin-1 punctuation, general punctuation (dashes, curly quotes, bullets),
#: arrows, box drawing and dingbats, CJK punctuation and full-width forms.
SEPARATORS = (
    r"[\u00a0-\u00a9\u00ab-\u00b4\u00b6-\u00b9\u00bb-\u00bf\u00d7\u00f7"
    r"\u2000-\u206f\u2190-\u21ff\u2500-\u27bf\u3000-\u3004\u3008-\u3020\u3030\u30fb"
    r"\ufe30-\ufe4f\ufeff\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.documents (
    path        text PRIMARY KEY,
    source      text NOT NULL,
    doc_type    text NOT NULL,
    title       text NOT NULL,
    meta        jsonb NOT NULL DEFAULT '{{}}',
    body        text NOT NULL,
    size_bytes  bigint NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('english', regexp_replace(title, {sep}, ' ', 'g')), 'A')
                    || setweight(to_tsvector('english', regexp_replace(body, {sep}, ' ', 'g')),
                                 'B')) STORED,
    runs        integer NOT NULL DEFAULT 1,
    task_id     bigint,
    indexed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS documents_tsv_idx ON {schema}.documents USING gin (tsv);
CREATE INDEX IF NOT EXISTS documents_source_idx ON {schema}.documents (source);
"""

_UPSERT = """
INSERT INTO {schema}.documents AS d
    (path, source, doc_type, title, meta, body, size_bytes, task_id)
VALUES (%(path)s, %(source)s, %(doc_type)s, %(title)s, %(meta)s, %(body)s, %(size)s, %(task_id)s)
ON CONFLICT (path) DO UPDATE SET
    source = EXCLUDED.source, doc_type = EXCLUDED.doc_type, title = EXCLUDED.title,
    meta = EXCLUDED.meta, body = EXCLUDED.body, size_bytes = EXCLUDED.size_bytes,
    task_id = EXCLUDED.task_id, runs = d.runs + 1, indexed_at = now()
"""

# Rank every match, then write snippets only for the rows shown: ts_headline re-parses
# the whole body, which is costly for large documents.
_SEARCH = """
SELECT path, source, doc_type, title, rank,
       ts_headline('english', body, query,
                   'StartSel=«, StopSel=», MaxWords=18, MinWords=6, MaxFragments=1')
FROM (
    SELECT d.path, d.source, d.doc_type, d.title, d.body, q.query,
           ts_rank(d.tsv, q.query) AS rank
    FROM {schema}.documents d,
         websearch_to_tsquery('english', regexp_replace(%(q)s, %(sep)s, ' ', 'g')) AS q(query)
    WHERE d.tsv @@ q.query
    ORDER BY rank DESC, d.path
    LIMIT %(limit)s
) top
ORDER BY rank DESC, path
"""


def ensure_index(conn: psycopg.Connection[Any], schema: str | None = None) -> None:
    """Create the schema, table and indexes if missing (safe when many workers race)."""
    name = sql.Identifier(schema or index_schema())
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('tenure-docs-index'))")
        conn.execute(sql.SQL(_DDL).format(schema=name, sep=sql.Literal(SEPARATORS)))


def upsert(
    conn: psycopg.Connection[Any],
    *,
    path: str,
    source: str,
    doc_type: str,
    title: str,
    meta: dict[str, Any],
    body: str,
    size: int,
    task_id: int | None,
    schema: str | None = None,
) -> None:
    """Write one document's row, replacing it if it exists."""
    statement = sql.SQL(_UPSERT).format(schema=sql.Identifier(schema or index_schema()))
    conn.execute(
        statement,
        {
            "path": path,
            "source": source,
            "doc_type": doc_type,
            "title": title,
            "meta": json.dumps(meta),
            "body": body.replace("\x00", " "),
            "size": size,
            "task_id": task_id,
        },
    )


@dataclass(frozen=True)
class Hit:
    path: str
    source: str
    doc_type: str
    title: str
    rank: float
    snippet: str


def search(
    conn: psycopg.Connection[Any], query: str, *, limit: int = 10, schema: str | None = None
) -> list[Hit]:
    """Ranked matches for a web-search style query (``"exact phrase"``, ``-not``, ``or``)."""
    statement = sql.SQL(_SEARCH).format(schema=sql.Identifier(schema or index_schema()))
    rows = conn.execute(statement, {"q": query, "sep": SEPARATORS, "limit": limit}).fetchall()
    return [Hit(r[0], r[1], r[2], r[3], float(r[4]), " ".join(str(r[5]).split())) for r in rows]


def counts(conn: psycopg.Connection[Any], schema: str | None = None) -> tuple[int, int]:
    """(rows in the index, writes beyond the first per row)."""
    statement = sql.SQL("SELECT count(*), coalesce(sum(runs - 1), 0) FROM {}.documents").format(
        sql.Identifier(schema or index_schema())
    )
    row = conn.execute(statement).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
