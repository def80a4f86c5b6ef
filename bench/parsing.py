"""CPU-bound work: the document demo's PDF and DOCX files parsed for real, on 2 processes.

What it measures: documents per second parsed by

- ``tenure worker --processes 2`` running a plain (thread) task that parses one file,
- the same with the task declared ``isolation="process"`` (each worker process hands
  the parse to a reused child process),
- Celery's prefork pool, ``celery worker --pool prefork --concurrency 2``, Redis broker
  at 127.0.0.1:6379 (the bench's Celery environment, ``bench/.peers/celery``, with the
  same parser packages installed at the same versions),
- and, as the floor, the bare parser in a ``multiprocessing.Pool(2)`` over the same
  files (``imap_unordered``, one file per message).

Every system parses with ``examples.documents.parsers.extract`` (pypdf, python-docx),
nothing else and no sleep; the task returns a small dict. Files: the demo corpus
(``examples.documents.corpus.generate``, fixed seed), its PDF and DOCX files that are
neither corrupt nor huge, repeated in a fixed order up to ``--docs`` documents.

How a run is timed: ``--warmup`` documents followed by ``--docs`` timed ones are
enqueued before the workers start. Each parse appends ``<pid> <start> <end> <parse s>
<parse CPU s>`` (wall clock; ``time.thread_time`` around the parser) to a log file.
The rate is the documents that ended after the ``--warmup``-th end, over the time from
that end to the last one: start-up, imports and the spawning of task processes fall
before the window. The worker processes' CPU (the whole tree: supervisor, workers,
task processes; Celery's main process and pool) is read when the window opens and
when it closes.

Tenure's overhead per task, two ways:

- **wall**: ``2 / rate − 2 / bare_rate`` — process-seconds per document on 2 processes
  beyond what the bare 2-process pool spends on the same files (target ≤ 1 ms);
- **cpu**: the worker tree's CPU in the window, minus the parsers' own CPU, per
  document: what tenure's (or Celery's) machinery burns outside the parser on the
  worker side. The database's (or Redis's) own CPU is not in it.

``python bench/parsing.py`` runs it; ``run_parsing()`` returns the results as a dict.
Systems are interleaved ``--repeats`` times and the median kept; the 2-core machine
may be shared, so absolute figures are indicative and ratios come from the same run.

This file is also the task module of both queues: ``bench.parsing:reg`` for tenure
(schema ``$TENURE_PARSE_SCHEMA``, default ``bench_parsing``), and ``python
bench/parsing.py _celery ...`` under the Celery environment's Python (the top level
imports tenure only if it is installed).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCHEMA = os.environ.get("TENURE_PARSE_SCHEMA", "bench_parsing")
LOG_ENV = "TENURE_PARSE_LOG"
CELERY_QUEUE = "bench_parsing"  # its own list in the bench's Redis database
# What the Celery environment needs to run the documents app's parsers.
PARSER_PACKAGES = ("pypdf", "python-docx", "markdown-it-py", "selectolax", "lxml")

try:  # imported at load, so worker processes (and a fork-based pool) start warm
    from examples.documents import parsers as _parsers
except ImportError:  # the file is being run only to print --help, say
    _parsers = None  # type: ignore[assignment]

_log_fd: int | None = None


def parse_one(path: str) -> dict[str, Any]:
    """Parse one file with the documents app's parser; log its timings when asked."""
    global _log_fd
    from examples.documents import parsers

    s0, c0 = time.time(), time.thread_time()
    t0 = time.perf_counter()
    out = parsers.extract(path)
    t1 = time.perf_counter()
    c1, s1 = time.thread_time(), time.time()
    log = os.environ.get(LOG_ENV)
    if log:
        if _log_fd is None:
            _log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_log_fd, f"{os.getpid()} {s0:.6f} {s1:.6f} {t1 - t0:.6f} {c1 - c0:.6f}\n".encode())
    return {"type": out.doc_type, "chars": len(out.text)}


if find_spec("tenure") is not None:
    from tenure import Registry

    reg = Registry(schema=SCHEMA)

    @reg.task(name="bench.parse_thread")
    def parse_thread(payload: dict[str, Any]) -> dict[str, Any]:
        """Parse one file in a worker thread."""
        return parse_one(str(payload["path"]))

    @reg.task(name="bench.parse_process", isolation="process")
    def parse_process(payload: dict[str, Any]) -> dict[str, Any]:
        """Parse one file in one of the worker's task processes."""
        return parse_one(str(payload["path"]))


# -- files ------------------------------------------------------------------------------------


def corpus_files(count: int, seed: int, root: Path) -> list[str]:
    """The corpus's PDF and DOCX files that parse (neither corrupt nor huge), sorted."""
    from examples.documents import corpus

    manifest = corpus.generate(root, count, seed)
    skip = set(manifest.corrupt) | set(manifest.huge)
    return sorted(f for f in manifest.files if f.endswith((".pdf", ".docx")) and f not in skip)


def _bare_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def bare_pool(files: list[str], warmup: list[str]) -> dict[str, Any]:
    """The floor: the same parser in a 2-process pool, one file per message."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2, initializer=_bare_init) as pool:
        list(pool.imap_unordered(_bare_parse, warmup, chunksize=1))
        t0 = time.perf_counter()
        times = list(pool.imap_unordered(_bare_parse, files, chunksize=1))
        elapsed = time.perf_counter() - t0
    return {
        "rate": len(files) / elapsed,
        "seconds": elapsed,
        "docs": len(files),
        "parse_ms": statistics.mean(t for t, _ in times) * 1e3,
        "parse_cpu_ms": statistics.mean(c for _, c in times) * 1e3,
    }


def _bare_parse(path: str) -> tuple[float, float]:
    assert _parsers is not None
    c0, t0 = time.thread_time(), time.perf_counter()
    _parsers.extract(path)
    return time.perf_counter() - t0, time.thread_time() - c0


# -- one timed run ------------------------------------------------------------------------------


def _tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _watch(proc: subprocess.Popen[bytes], log: Path, warm: int, total: int, timeout: float) -> Any:
    """Wait for ``total`` log lines; CPU of the worker tree at ``warm`` lines and at the
    end. Returns (lines, cpu at the window's opening, cpu at its close)."""
    deadline = time.monotonic() + timeout
    cpu_open: float | None = None
    n = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker pid {proc.pid} exited ({proc.returncode}); see its log")
        n = log.read_bytes().count(b"\n") if log.exists() else 0
        if cpu_open is None and n >= warm:
            cpu_open = _tree_cpu(proc.pid)
        if n >= total:
            break
        time.sleep(0.02)
    cpu_close = _tree_cpu(proc.pid)
    if n < total:
        raise RuntimeError(f"only {n} of {total} documents parsed in {timeout:.0f} s")
    lines = log.read_text().splitlines()
    return lines, cpu_open if cpu_open is not None else cpu_close, cpu_close


def _window(lines: list[str], warm: int, cpu: float) -> dict[str, Any]:
    rows = sorted((float(s[2]), float(s[3]), float(s[4])) for s in (ln.split() for ln in lines))
    t_open = rows[warm - 1][0] if warm > 0 else min(float(ln.split()[1]) for ln in lines)
    inside = rows[warm:]
    elapsed = inside[-1][0] - t_open
    parse_cpu = sum(r[2] for r in inside)
    return {
        "rate": len(inside) / elapsed,
        "seconds": elapsed,
        "docs": len(inside),
        "parse_ms": statistics.mean(r[1] for r in inside) * 1e3,
        "parse_cpu_ms": parse_cpu / len(inside) * 1e3,
        "tree_cpu_ms": cpu / len(inside) * 1e3,
        "outside_cpu_ms": (cpu - parse_cpu) / len(inside) * 1e3,
    }


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Runs:
    def __init__(self, args: argparse.Namespace, files: list[str], warm: list[str]) -> None:
        import psycopg

        from bench import harness as h

        self.h = h
        self.args = args
        self.files = files
        self.warm = warm
        self.dsn = h.SYSTEM_DSN
        os.environ["TENURE_DATABASE_URL"] = self.dsn
        self.db = psycopg.connect(self.dsn, autocommit=True)
        self.logdir = h.ROOT / "bench" / "results" / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.celery_python = ""

    def close(self) -> None:
        self.db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        reg.client.close()
        self.db.close()

    def tenure(self, isolation: str) -> dict[str, Any]:
        a, h = self.args, self.h
        task = parse_process if isolation == "process" else parse_thread
        self.db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        reg.client.close()
        task.send_many([{"path": p} for p in [*self.warm, *self.files]])
        self.db.execute(f"ANALYZE {SCHEMA}.tasks")
        log = self.logdir / f"parsing-tenure-{isolation}.times"
        log.unlink(missing_ok=True)
        env = {**h.tenure_env(self.dsn, SCHEMA), LOG_ENV: str(log), "TENURE_PARSE_SCHEMA": SCHEMA}
        flags = ["--processes", "2", "--concurrency", str(a.concurrency), "--lease", "30s"]
        if a.prefetch is not None:
            flags += ["--prefetch", str(a.prefetch)]
        cmd = h.tenure_worker_cmd(flags, app="bench.parsing:reg")
        return self._timed(cmd, env, log, "parsing-tenure.log")

    def _timed(self, cmd: list[str], env: dict[str, str], log: Path, errlog: str) -> dict[str, Any]:
        """Start the worker (its stderr to ``errlog``), wait for every document, stop it;
        the window's figures from the parse ``log``."""
        with (self.logdir / errlog).open("ab") as err:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
            try:
                total = len(self.warm) + len(self.files)
                lines, c0, c1 = _watch(proc, log, len(self.warm), total, self.args.timeout)
            finally:
                _stop(proc)
        return _window(lines, len(self.warm), c1 - c0)

    def celery(self) -> dict[str, Any]:
        if not self.celery_python:
            self.celery_python = celery_python()
        url = self.h.REDIS_URL
        log = self.logdir / "parsing-celery.times"
        log.unlink(missing_ok=True)
        base = [self.celery_python, __file__, "_celery"]
        subprocess.run([*base, "purge", url], check=True, capture_output=True, cwd=ROOT)
        listing = self.logdir / "parsing-celery.files"
        listing.write_text("\n".join([*self.warm, *self.files]))
        subprocess.run([*base, "enqueue", url, str(listing)], check=True, cwd=ROOT)
        env = {**os.environ, LOG_ENV: str(log)}
        try:
            return self._timed([*base, "worker", url], env, log, "parsing-celery.log")
        finally:
            subprocess.run([*base, "purge", url], capture_output=True, cwd=ROOT)


def celery_python() -> str:
    """The bench's Celery environment, with the parsers' packages at tenure's versions."""
    from importlib.metadata import version

    from bench import harness as h

    python = str(h.peer_python("celery"))
    probe = "import pypdf, docx, markdown_it, selectolax, lxml"
    if subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
        pins = [f"{name}=={version(name)}" for name in PARSER_PACKAGES]
        h.console.print(f"installing {' '.join(pins)} into bench/.peers/celery")
        subprocess.run([python, "-m", "pip", "install", "--quiet", *pins], check=True)
    return python


# -- the whole run -------------------------------------------------------------------------------

SYSTEMS = ("bare", "tenure-thread", "tenure-process", "celery")
LABELS = {
    "bare": "bare parser, multiprocessing.Pool(2)",
    "tenure-thread": "tenure --processes 2, thread task",
    "tenure-process": 'tenure --processes 2, isolation="process"',
    "celery": "Celery prefork --concurrency 2",
}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--count", type=int, default=1000, help="corpus size to generate (1000)")
    p.add_argument("--seed", type=int, default=7, help="corpus seed (7)")
    p.add_argument(
        "--corpus", type=Path, default=Path("/tmp/tenure-bench-corpus"), help="corpus directory"
    )
    p.add_argument("--docs", type=int, default=1500, help="timed documents per run (1500)")
    p.add_argument("--warmup", type=int, default=40, help="documents before the window (40)")
    p.add_argument("--repeats", type=int, default=2, help="runs per system, interleaved (2)")
    p.add_argument("--concurrency", type=int, default=2, help="tenure slots per worker process (2)")
    p.add_argument("--prefetch", type=int, default=None, help="tenure --prefetch (its default)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"({','.join(SYSTEMS)})")
    p.add_argument("--timeout", type=float, default=300.0, help="longest run, s (300)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def run_parsing(argv: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Run the parsing benchmark and return its results as a plain dict.

    ``argv`` takes the command-line flags (see ``--help``); keyword ``overrides`` set
    the same options by attribute name (``docs=500``, ``systems="bare,celery"``).
    Result keys: ``meta`` (sizes, files, load), ``runs`` (system -> list of runs, each
    {rate, seconds, docs, parse_ms, parse_cpu_ms, and for the queues tree_cpu_ms,
    outside_cpu_ms}), ``median`` (system -> median docs/s), ``overhead_ms`` (system ->
    {wall, cpu}: see the module's docstring), ``vs_celery`` (system -> its docs/s ÷
    Celery's).
    """
    args = _parse_args(argv if argv is not None else [])
    for key, value in overrides.items():
        setattr(args, key, value)
    systems = [s for s in str(args.systems).split(",") if s]
    from bench import harness as h

    files = corpus_files(args.count, args.seed, args.corpus)
    if not files:
        raise RuntimeError("the corpus has no PDF or DOCX file")
    timed = [files[i % len(files)] for i in range(args.docs)]
    warm = [files[(args.docs + i) % len(files)] for i in range(args.warmup)]
    pdfs = sum(1 for f in files if f.endswith(".pdf"))
    results: dict[str, Any] = {
        "meta": {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "files": len(files),
            "pdf": pdfs,
            "docx": len(files) - pdfs,
            "start_load": h.load(),
        },
        "runs": {s: [] for s in systems},
    }
    if "celery" in systems and not h.redis_up():
        h.console.print("[yellow]no Redis at 127.0.0.1:6379: Celery skipped[/]")
        systems.remove("celery")
    h.console.print(
        f"{len(files)} files ({pdfs} PDF, {len(files) - pdfs} DOCX) from a {args.count}-document "
        f"corpus (seed {args.seed}) in {args.corpus}; {args.docs} timed + {args.warmup} warm-up "
        f"documents per run; load {h.load()}"
    )
    t0 = time.monotonic()
    runs = Runs(args, timed, warm)
    try:
        with h.sigterm_raises():
            for repeat in range(args.repeats):
                for name in systems:
                    if name == "bare":
                        r = bare_pool(timed, warm)
                    elif name == "celery":
                        r = runs.celery()
                    else:
                        r = runs.tenure(name.split("-")[1])
                    results["runs"][name].append(r)
                    extra = (
                        f", worker CPU outside the parser {r['outside_cpu_ms']:.2f} ms/doc"
                        if "outside_cpu_ms" in r
                        else ""
                    )
                    h.console.print(
                        f"  run {repeat + 1}: {LABELS[name]:42} {r['rate']:7.1f} docs/s "
                        f"(parse {r['parse_ms']:.2f} ms/doc{extra})  load {h.load()}"
                    )
    finally:
        runs.close()
    results["meta"]["seconds"] = time.monotonic() - t0
    results["meta"]["end_load"] = h.load()
    _summarise(results)
    return results


def _summarise(results: dict[str, Any]) -> None:
    med = {s: statistics.median(r["rate"] for r in rs) for s, rs in results["runs"].items() if rs}
    results["median"] = med
    over: dict[str, dict[str, float]] = {}
    for s, rs in results["runs"].items():
        if s == "bare" or not rs:
            continue
        o: dict[str, float] = {
            "cpu": statistics.median(r["outside_cpu_ms"] for r in rs),
        }
        if "bare" in med:
            o["wall"] = (2 / med[s] - 2 / med["bare"]) * 1e3
        over[s] = o
    results["overhead_ms"] = over
    if "celery" in med:
        results["vs_celery"] = {s: v / med["celery"] for s, v in med.items()}


def print_report(results: dict[str, Any]) -> None:
    med, over = results["median"], results["overhead_ms"]
    vs = results.get("vs_celery", {})
    print()
    print("documents/s on 2 processes (median of runs):")
    for s, v in med.items():
        o = over.get(s, {})
        wall = f"{o['wall']:+6.2f} ms" if "wall" in o else "      –  "
        cpu = f"{o['cpu']:5.2f} ms" if "cpu" in o else "   –    "
        ratio = f"{vs[s]:5.2f}× Celery" if s in vs else ""
        print(f"  {LABELS[s]:42} {v:7.1f}/s  overhead wall {wall}  cpu {cpu}  {ratio}")
    print(
        "overhead wall = 2/rate − 2/bare rate (process-seconds per document beyond the bare "
        "pool); cpu = worker tree CPU outside the parser per document"
    )
    for s in ("tenure-thread", "tenure-process"):
        if s in med and "celery" in med:
            ok = med[s] >= med["celery"]
            print(f"  {s}: ≥ Celery prefork: {'PASS' if ok else 'BELOW TARGET'}", end="")
            if "wall" in over.get(s, {}):
                w = over[s]["wall"]
                # Faster than the bare pool means the machine's other load moved more
                # than tenure's overhead: the wall figure says nothing then.
                wall = (
                    "inconclusive (faster than the bare pool: contention)"
                    if w < 0
                    else ("PASS" if w <= 1.0 else "BELOW TARGET")
                )
                print(f"; wall overhead ≤ 1 ms: {wall}", end="")
            cpu = over.get(s, {}).get("cpu", float("nan"))
            print(f"; CPU outside the parser ≤ 1 ms: {'PASS' if cpu <= 1.0 else 'ABOVE'}")
    m = results["meta"]
    print(f"load average {m['start_load']} → {m['end_load']}; {m['seconds']:.0f} s in all")


# -- the Celery side (run by the Celery environment's Python) ------------------------------------


def _celery_main(argv: list[str]) -> int:
    """``_celery worker URL`` | ``_celery enqueue URL LISTING`` | ``_celery purge URL``."""
    from celery import Celery

    action, url = argv[:2]
    app = Celery("bench_parsing", broker=url)
    app.conf.task_ignore_result = True
    app.conf.task_default_queue = CELERY_QUEUE

    @app.task(name="bench.parse")  # type: ignore[untyped-decorator]
    def parse(path: str) -> dict[str, Any]:
        return parse_one(path)

    if action == "worker":
        argv = ["worker", "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"]
        app.worker_main([*argv, "--queues", CELERY_QUEUE])
    elif action == "enqueue":
        paths = Path(argv[2]).read_text().splitlines()
        with app.producer_or_acquire() as producer:
            for p in paths:
                parse.apply_async(args=[p], producer=producer)
    elif action == "purge":
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(CELERY_QUEUE)
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_celery":
        return _celery_main(sys.argv[2:])
    args = _parse_args(None)
    from bench import harness as h

    return h.report_main(
        run_parsing, print_report, sys.argv[1:], args.json, "interrupted; workers stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
