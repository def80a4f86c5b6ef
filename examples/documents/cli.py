"""``tenure-docs``: generate a corpus, ingest a folder, search the index.

tenure-docs generate ./corpus --count 2000      # a corpus of mixed documents
tenure-docs ingest ~/Documents                  # enqueue every PDF, DOCX, HTML, MD, TXT
tenure-docs watch ~/Documents --every 10m       # and again every 10 min, what changed
tenure worker examples.documents.app:reg --processes 2   # parse and index them
tenure-docs search '"quarterly report" -draft'  # ranked matches with snippets
tenure-docs failed                              # documents that could not be parsed
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import click
import psycopg
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from examples.documents import app, corpus, index
from examples.documents import ingest as ingesting
from tenure import inert
from tenure.schedules import When

console = Console()


def _connect() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(app.reg.client.dsn, autocommit=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@click.group()
def main() -> None:
    """Parse and index documents with a tenure fleet; search them with PostgreSQL."""


@main.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", default=2000, show_default=True, help="Documents to write.")
@click.option("--seed", default=7, show_default=True, help="Same seed, same corpus.")
def generate(path: Path, count: int, seed: int) -> None:
    """Write a corpus of mixed documents (some corrupt, some huge) into PATH."""
    with _progress() as bar:
        task = bar.add_task("generating", total=count)
        manifest = corpus.generate(path, count, seed, progress=lambda n: bar.advance(task, n))
    console.print(
        f"{len(manifest.files)} documents in {path} ({len(manifest.corrupt)} corrupt, "
        f"{len(manifest.huge)} huge)"
    )
    for phrase, where in manifest.planted.items():
        console.print(f'  "{phrase}" is in {where}')


@main.command("watch")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--every", default="10m", show_default=True, help="How often to look again.")
@click.option("--source", help="Partition key for every file (default: first folder under PATH).")
def watch_cmd(path: Path, every: str, source: str | None) -> None:
    """Ingest PATH now, then on a schedule: every tick enqueues the files changed since
    the tick before. Any worker of the app sends each tick once, however many run;
    ticks missed while no worker ran are caught up (each covers its own period)."""
    folder = path.resolve()
    period = When.build(None, every, "UTC", "--every").every
    assert period is not None
    report = ingesting.ingest(folder, source=source)
    name = watch_name(folder)
    app.reg.add_schedule(
        app.reingest_folder, name=name, every=period, catch_up="all", max_catch_up=144,
        payload={"folder": str(folder), "every_seconds": period.total_seconds(), "source": source},
    )  # fmt: skip
    console.print(
        f"enqueued {report.sent} documents now; watching {escape(str(folder))} every "
        f"{escape(every)} (schedule {escape(name)}: tenure schedules list "
        f"--app examples.documents.app:reg)"
    )


@main.command("unwatch")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
def unwatch_cmd(path: Path) -> None:
    """Stop watching PATH (what it indexed stays)."""
    name = watch_name(path.resolve())
    app.reg.client.delete_schedule(name)
    console.print(f"stopped watching {escape(str(path.resolve()))}")


def watch_name(folder: Path) -> str:
    """The schedule of a watched folder: named after it (a digest when it is long)."""
    text = str(folder)
    if len(text) > 180:
        text = "…" + text[-120:] + " " + hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    return f"docs.watch {text}"


@main.command("ingest")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--source", help="Partition key for every file (default: first folder under PATH).")
@click.option("--wait", is_flag=True, help="Wait until every document is indexed or failed.")
def ingest_cmd(path: Path, source: str | None, wait: bool) -> None:
    """Enqueue every PDF, DOCX, HTML, Markdown and text file under PATH."""
    with _progress() as bar:
        task = bar.add_task("enqueueing", total=None)
        report = ingesting.ingest(
            path,
            source=source,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    sources = ", ".join(f"{k} {v}" for k, v in sorted(report.by_source.items()))
    console.print(
        f"enqueued {report.sent} documents ({sources or 'none'}); {report.large} large "
        f"(process isolation); {report.skipped} files of other types skipped"
    )
    console.print(schema_hint())
    if not wait or not report.sent:
        return
    with _connect() as conn, _progress() as bar:
        task = bar.add_task("indexing", total=report.sent)
        while True:
            states = ingesting.outcomes(conn, report.task_ids)["states"]
            done = sum(states.values())
            bar.update(task, completed=done)
            if done >= report.sent:
                break
            time.sleep(0.5)
    _print_failed(report.task_ids)


@main.command("search")
@click.argument("query")
@click.option("--limit", "-n", default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per match.")
def search_cmd(query: str, limit: int, as_json: bool) -> None:
    """Ranked matches for QUERY (web-search syntax: "a phrase", -exclude, or)."""
    with _connect() as conn:
        index.ensure_index(conn)
        hits = index.search(conn, query, limit=limit)
    if as_json:
        for hit in hits:
            relative = hit.rank / hits[0].rank if hits[0].rank > 0 else 0.0
            click.echo(json.dumps({**dataclasses.asdict(hit), "relative": round(relative, 4)}))
        sys.exit(0 if hits else 1)
    if not hits:
        console.print(f"no document matches {query!r}")
        sys.exit(1)
    table = Table(title=f"{len(hits)} best matches for {query!r}", show_lines=True)
    table.add_column("rank", justify="right")
    table.add_column("document", overflow="fold")
    table.add_column("snippet", overflow="fold")
    for hit in hits:
        snippet = escape(hit.snippet).replace("«", "[bold yellow]").replace("»", "[/]")
        table.add_row(
            shown_rank(hit.rank, hits[0].rank),
            f"{escape(hit.path)}\n[dim]{escape(hit.source)} · {hit.doc_type}[/]",
            snippet,
        )
    console.print(table)


def shown_rank(rank: float, best: float) -> str:
    """A match's rank as a reader can compare it: relative to the best match (1.00),
    and PostgreSQL's ts_rank beside it with three significant digits (it is often
    far below 0.001 for a long document)."""
    relative = rank / best if best > 0 else 0.0
    return f"{relative:.2f}\n[dim]{rank:.3g}[/]"


def schema_hint() -> str:
    """Which tenure schema this app uses, and how to point the operator commands at it."""
    schema = index.queue_schema()
    return (
        f"tenure schema {schema}; see it with: tenure status --schema {schema} "
        "(or --app examples.documents.app:reg)"
    )


@main.command("failed")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: counts and failures.")
def failed_cmd(as_json: bool) -> None:
    """Documents that could not be parsed, with the reason."""
    _print_failed(None, as_json=as_json)


def _print_failed(task_ids: list[int] | None, *, as_json: bool = False) -> None:
    with _connect() as conn:
        out = ingesting.outcomes(conn, task_ids)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "schema": index.queue_schema(),
                    "states": out["states"],
                    "failed": [
                        {"path": path, "state": state, "reason": reason}
                        for path, state, reason in out["failed"]
                    ],
                }
            )
        )
        return
    states = ", ".join(f"{k} {v}" for k, v in sorted(out["states"].items()))
    console.print(f"documents finished (schema {index.queue_schema()}): {states or 'none'}")
    # One line per path, never broken by the terminal's width (a path stays whole for
    # copying), and the reason indented under it.
    for path, state, reason in out["failed"]:
        console.print(f"  [red]{escape(inert(state))}[/] {escape(inert(path))}", soft_wrap=True)
        console.print(f"      {escape(inert(reason))}", soft_wrap=True)


def run() -> None:
    main(prog_name="tenure-docs")


if __name__ == "__main__":
    run()
