"""The documents app on files nobody here wrote: this machine's own documentation.

Builds a corpus from /usr/share/doc (HTML, Markdown, text), Python's library (text and
Markdown, and its CJK test files in Big5, EUC-JP, Shift-JIS and more) and the PDF files
found on the machine; runs ``tenure worker examples.documents.app:reg --processes 2``,
enqueues every file with ``tenure-docs ingest``, SIGKILLs one worker process while it
holds leases, and waits until every file is indexed or failed. Then it checks that
every file is accounted for (indexed, or failed with a reason), searches phrases picked
from a Markdown file (across a line break), an HTML page declaring ISO-8859-1 and the
legacy-encoded files, and prints documents/s by the database clock.

    .venv/bin/python bench/real_documents.py                     # default sizing
    .venv/bin/python bench/real_documents.py --process-slots 8   # one process per slot

Talks only to the embedded server or the DSN given (``--dsn``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SUFFIXES = {".html", ".htm", ".md", ".txt", ".pdf"}
PYLIB = Path(os.__file__).parent


def build_corpus(root: Path) -> dict[str, int]:
    """Copy the machine's documents under ``root``, one folder per source."""
    if root.exists():
        shutil.rmtree(root)
    sources = {
        "doc": [p for p in Path("/usr/share/doc").rglob("*") if p.suffix in SUFFIXES - {".pdf"}],
        "python": [
            p
            for p in PYLIB.rglob("*")
            if p.suffix in {".txt", ".md"} and "cjkencodings" not in p.parts
        ],
        "cjk": [
            p
            for p in (PYLIB / "test" / "cjkencodings").glob("*.txt")
            if not p.stem.endswith("-utf8")
        ],
        "pdf": [
            p
            for base in (Path("/usr/share"), Path(sys.prefix))
            for p in base.rglob("*.pdf")
            if p.is_file()
        ],
    }
    counts: dict[str, int] = {}
    for source, files in sources.items():
        n = 0
        for f in files:
            if not f.is_file() or f.is_symlink() or f.stat().st_size == 0:
                continue
            target = root / source / f"{n:05d}-{f.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            n += 1
        counts[source] = n
    return counts


def pick_phrases(root: Path) -> list[tuple[str, str, str]]:
    """(what, phrase, file name) to search for: words across a Markdown line break,
    words of an HTML page declaring ISO-8859-1, and lines of legacy-encoded files
    (their text taken from Python's UTF-8 twins of the same files)."""
    out: list[tuple[str, str, str]] = []
    for md in sorted((root / "doc").glob("*.md")) + sorted((root / "python").glob("*.md")):
        lines = md.read_text(errors="replace").splitlines()
        for a, b in zip(lines, lines[1:], strict=False):
            wa, wb = a.split(), b.split()
            if (
                len(wa) >= 4
                and len(wb) >= 4
                and all(w.isalpha() and w.isascii() for w in wa[-2:] + wb[:2])
            ):
                out.append(("markdown across a line break", " ".join(wa[-2:] + wb[:2]), md.name))
                break
        if out:
            break
    for html in sorted((root / "doc").glob("*.htm*")):
        head = html.read_bytes()[:2048].lower()
        if b"iso-8859-1" not in head:
            continue
        from selectolax.lexbor import LexborHTMLParser

        body = LexborHTMLParser(html.read_bytes().decode("latin-1")).body
        words = (body.text(separator=" ") if body else "").split()
        # four consecutive words, well into the page
        runs = [
            words[i : i + 4]
            for i in range(40, len(words) - 4)
            if all(w.isalpha() and len(w) > 2 for w in words[i : i + 4])
        ]
        run = runs[0] if runs else []
        if len(run) == 4:
            out.append(("HTML declaring ISO-8859-1", " ".join(run), html.name))
            break
    twins = PYLIB / "test" / "cjkencodings"
    for name in ("big5", "shift_jis", "euc_jp"):
        for f in (root / "cjk").glob(f"*-{name}.txt"):
            truth = (twins / f"{name}-utf8.txt").read_text()
            # a whole word: the index splits text without spaces at punctuation only
            words = re.split(r"[^\w]+", truth)
            phrase = next(w for w in words if 2 <= len(w) <= 12 and not w.isascii())
            out.append((f"legacy-encoded text ({name})", phrase, f.name))
    return out


def sql(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=Path("/tmp/tenure-real-corpus"))
    p.add_argument("--schema", default="tenure_docs_real")
    p.add_argument("--dsn", default=None, help="default: the embedded server")
    p.add_argument("--process-slots", type=int, default=None, help="default: tenure's sizing")
    p.add_argument("--kill-at", type=float, default=0.3, help="kill when this share is done")
    a = p.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from tenure._db.connect import resolve_dsn

    dsn = resolve_dsn(a.dsn)
    counts = build_corpus(a.corpus)
    total = sum(counts.values())
    print(f"corpus: {total:,} files {counts}")
    for s in (a.schema, f"{a.schema}_index"):
        sql(dsn, f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
    env = {
        **os.environ,
        "TENURE_DOCS_SCHEMA": a.schema,
        "TENURE_DATABASE_URL": dsn,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
    }
    flags = ["--processes", "2"]
    if a.process_slots:
        flags += ["--process-slots", str(a.process_slots)]
    worker = subprocess.Popen(
        [PY, "-m", "tenure", "worker", "examples.documents.app:reg", *flags],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        subprocess.run(
            [PY, "-m", "examples.documents.cli", "ingest", str(a.corpus)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        tasks, done = f'"{a.schema}".tasks', f'"{a.schema}".finished_tasks'
        killed: int | None = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            finished = sql(dsn, f"SELECT count(*) FROM {done}")[0][0]
            left = sql(dsn, f"SELECT count(*) FROM {tasks}")[0][0]
            if killed is None and finished >= a.kill_at * total:
                rows = sql(
                    dsn,
                    f'SELECT w.pid, count(t.id) FROM "{a.schema}".workers w JOIN {tasks} t '
                    "ON t.lease_owner = w.id AND t.state = 'running' "
                    "WHERE w.state = 'active' GROUP BY w.pid ORDER BY 2 DESC LIMIT 1",
                )
                if rows:
                    killed = int(rows[0][0])
                    os.kill(killed, signal.SIGKILL)
                    print(f"SIGKILL worker {killed} holding {rows[0][1]} leases at {finished:,}")
            if left == 0 and finished >= total:
                break
            time.sleep(0.5)
        states = dict(sql(dsn, f"SELECT state, count(*) FROM {done} GROUP BY 1"))
        span = sql(
            dsn,
            f"SELECT extract(epoch FROM max(t.finished_at) - min(a.started_at)) FROM {done} t "
            f'JOIN "{a.schema}".attempts a ON a.task_id = t.id',
        )[0][0]
        rerun = sql(dsn, f'SELECT count(*) FROM "{a.schema}".attempts WHERE attempt > 1')[0][0]
        indexed = sql(dsn, f'SELECT count(*) FROM "{a.schema}_index".documents')[0][0]
        reasons = sql(
            dsn,
            f"SELECT split_part(last_error, ':', 1), count(*) FROM {done} "
            "WHERE state <> 'succeeded' GROUP BY 1 ORDER BY 2 DESC",
        )
        no_reason = sql(
            dsn,
            f"SELECT count(*) FROM {done} WHERE state <> 'succeeded' "
            "AND coalesce(last_error, '') = ''",
        )[0][0]
        print(f"finished: {states} of {total:,}; indexed rows {indexed:,}; re-runs {rerun}")
        print(f"failed, by reason: {dict(reasons)}; failed without a reason: {no_reason}")
        print(f"documents/s: {total / float(span):.1f} over {float(span):.1f} s (database clock)")
        found = 0
        phrases = pick_phrases(a.corpus)
        for what, phrase, name in phrases:
            res = subprocess.run(
                [PY, "-m", "examples.documents.cli", "search", f'"{phrase}"', "--json"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            hits = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
            ok = any(name in str(h.get("path", "")) for h in hits)
            found += ok
            print(f"  {'found' if ok else 'NOT FOUND'}: {what}: {phrase!r} in {name}")
        accounted = sum(states.values()) == total and no_reason == 0
        print(
            f"check {'passed' if accounted and found == len(phrases) else 'FAILED'}: "
            f"{sum(states.values()):,}/{total:,} accounted, {found}/{len(phrases)} phrases found"
        )
        return 0 if accounted and found == len(phrases) else 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


if __name__ == "__main__":
    sys.exit(main())
