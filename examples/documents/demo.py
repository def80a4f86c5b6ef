"""``make demo``: a fleet parses and indexes a corpus while it is killed, redeployed and grown.

On the embedded PostgreSQL (nothing to install, no DSN), or ``TENURE_DATABASE_URL``:

1. generate a corpus of mixed documents (reused when the seed and size match);
2. start a supervised fleet, ``tenure worker examples.documents.app:reg --processes 2``;
3. ingest the corpus (one task per document, partition key = its source);
4. while the fleet works: SIGKILL a worker that holds leases (its supervisor restarts
   it; the others take its tasks over when the leases expire), roll a deploy (SIGTERM
   each worker in turn: it drains and hands back what it holds, and is replaced), and
   scale out (start one more worker);
5. check that every document was indexed once or reported failed with its reason.

A live view shows per-worker throughput, queue depth per source, leases held,
takeovers and restarts. Ctrl-C stops every process the demo started.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psutil  # type: ignore[import-untyped]
import psycopg
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "tenure_demo"
APP = "examples.documents.app:reg"
LEASE_S = 3.0

console = Console()


# --------------------------------------------------------------------------- the fleet


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Supervisor:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Fleet:
    """The supervisors this demo started, and everything below them."""

    env: dict[str, str]
    log_dir: Path
    concurrency: int
    supervisors: list[Supervisor] = field(default_factory=list)
    hurry: bool = False

    def start(self, name: str, processes: int) -> Supervisor:
        log_path = self.log_dir / f"supervisor-{name}.log"
        cmd = [
            sys.executable, "-m", "tenure", "worker", APP,
            "--processes", str(processes),
            "--concurrency", str(self.concurrency),
            "--lease", f"{LEASE_S:g}s",
            "--drain-timeout", "10s",
            "--log-level", "info",
        ]  # fmt: skip
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops the fleet
                preexec_fn=_die_with_parent,  # and if the demo is killed, the fleet drains
            )
        sup = Supervisor(name, proc, log_path)
        self.supervisors.append(sup)
        return sup

    def workers(self, sup: Supervisor) -> list[int]:
        """Pids of the worker processes ``sup`` runs now."""
        try:
            return [c.pid for c in psutil.Process(sup.proc.pid).children() if c.is_running()]
        except psutil.NoSuchProcess:
            return []

    def supervisor_of(self, pid: int) -> str:
        for sup in self.supervisors:
            if pid in self.workers(sup):
                return sup.name
        return "-"

    def restarts(self) -> int:
        total = 0
        for sup in self.supervisors:
            with contextlib.suppress(OSError):
                total += sup.log_path.read_text(errors="replace").count("child_restarted")
        return total

    def descendants(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for sup in self.supervisors:
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(sup.proc.pid)
                out += [parent, *parent.children(recursive=True)]
        return out

    def stop(self, timeout: float = 25.0) -> None:
        """SIGTERM every supervisor (its workers drain), then kill whatever is left."""

        def hurry(_signum: int, _frame: FrameType | None) -> None:
            self.hurry = True

        previous = signal.signal(signal.SIGINT, hurry)
        try:
            procs = self.descendants()
            for sup in self.supervisors:
                if sup.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        sup.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not self.hurry:
                if all(sup.proc.poll() is not None for sup in self.supervisors):
                    break
                time.sleep(0.05)
            procs += [p for p in self.descendants() if p not in procs]
            # Task processes notice their worker is gone and exit; stragglers are killed.
            _gone, alive = psutil.wait_procs(procs, timeout=0 if self.hurry else 5)
            for proc in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            psutil.wait_procs(alive, timeout=5)
            for sup in self.supervisors:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    sup.proc.wait(1)
        finally:
            signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- observing


class Observer:
    """Reads the fleet's state from tenure's tables and the index."""

    def __init__(self, conn: psycopg.Connection[Any], task_ids: list[int]) -> None:
        self.db = conn
        self.ids = task_ids
        self.rates: dict[Any, deque[tuple[float, int]]] = {}

    def q(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.db.execute(query, params).fetchall()

    def finished(self) -> int:
        return int(
            self.q("SELECT count(*) FROM finished_tasks WHERE id = ANY(%s)", (self.ids,))[0][0]
        )

    def now(self) -> datetime:
        value: datetime = self.q("SELECT clock_timestamp()")[0][0]
        return value

    def workers(self) -> list[tuple[Any, ...]]:
        """(id, pid, state, held, running, done, heartbeat age) of recent workers."""
        return self.q(
            """
            SELECT w.id, w.pid, w.state, w.held, w.running,
                   (SELECT count(*) FROM attempts a WHERE a.worker_id = w.id
                     AND a.outcome IN ('succeeded', 'error')) AS done,
                   extract(epoch FROM clock_timestamp() - w.heartbeat_at)
            FROM workers w
            WHERE w.state <> 'gone' OR w.stopped_at > clock_timestamp() - interval '6 seconds'
            ORDER BY w.started_at"""
        )

    def worker_id(self, pid: int) -> Any:
        rows = self.q("SELECT id FROM workers WHERE pid = %s AND state = 'active'", (pid,))
        return rows[0][0] if rows else None

    def held_by(self, pid: int) -> int:
        rows = self.q(
            "SELECT count(*) FROM tasks t JOIN workers w ON w.id = t.lease_owner "
            "WHERE t.state = 'running' AND w.pid = %s",
            (pid,),
        )
        return int(rows[0][0])

    def depth(self) -> list[tuple[Any, ...]]:
        """(source, queued, running, finished) per partition key."""
        return self.q(
            """
            SELECT k, sum(q)::int, sum(r)::int, sum(f)::int FROM (
                SELECT partition_key AS k, count(*) FILTER (WHERE state <> 'running') AS q,
                       count(*) FILTER (WHERE state = 'running') AS r, 0 AS f
                FROM tasks GROUP BY 1
                UNION ALL
                SELECT partition_key, 0, 0, count(*) FROM finished_tasks GROUP BY 1
            ) s GROUP BY k ORDER BY k"""
        )

    def counters(self) -> dict[str, int]:
        row = self.q(
            """SELECT count(*) FILTER (WHERE outcome = 'lease_expired'),
                      count(*) FILTER (WHERE outcome = 'released'),
                      count(*) FILTER (WHERE outcome = 'timed_out')
               FROM attempts"""
        )[0]
        states = dict(
            (str(r[0]), int(r[1]))
            for r in self.q("SELECT state, count(*) FROM finished_tasks GROUP BY state")
        )
        indexed, dup_writes = self.q(
            f"SELECT count(*), coalesce(sum(runs - 1), 0) FROM {SCHEMA}_index.documents"
        )[0]
        return {
            "takeovers": int(row[0]),
            "released": int(row[1]),
            "timed_out": int(row[2]),
            "succeeded": int(states.get("succeeded", 0)),
            "failed": int(states.get("failed", 0)) + int(states.get("quarantined", 0)),
            "indexed": int(indexed),
            "duplicate_writes": int(dup_writes),
        }

    def rate(self, worker: Any, done: int) -> float:
        """Documents per second finished by ``worker`` over the last 5 seconds."""
        now = time.monotonic()
        window = self.rates.setdefault(worker, deque())
        window.append((now, done))
        while len(window) > 2 and now - window[0][0] > 5:
            window.popleft()
        span = now - window[0][0]
        return (done - window[0][1]) / span if span > 0.5 else 0.0


# --------------------------------------------------------------------------- the scenario


@dataclass
class Scenario:
    """Kill (at 15 % done), redeploy (from 35 %), then scale out, each once."""

    fleet: Fleet
    obs: Observer
    total: int
    events: deque[str] = field(default_factory=lambda: deque(maxlen=9))
    log: list[str] = field(default_factory=list)
    step: str = "kill"
    kills: list[tuple[int, Any, datetime, int]] = field(default_factory=list)
    deploy_queue: list[int] = field(default_factory=list)
    deploy_old: int | None = None
    deploy_known: set[int] = field(default_factory=set)
    deploy_started: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        stamp = f"{time.monotonic() - self.started:5.1f}s"
        self.events.append(f"[dim]{stamp}[/] {text}")
        self.log.append(f"{stamp} {Text.from_markup(text).plain}")

    def tick(self, done: int) -> None:
        fraction = done / max(1, self.total)
        blue = self.fleet.supervisors[0]
        if self.step == "kill" and fraction >= 0.15 and done < self.total:
            pids = self.fleet.workers(blue)
            held = sorted(((self.obs.held_by(p), p) for p in pids), reverse=True)
            if held and (held[0][0] > 0 or fraction > 0.5):
                count, victim = held[0]
                wid = self.obs.worker_id(victim)
                os.kill(victim, signal.SIGKILL)
                self.kills.append((victim, wid, self.obs.now(), count))
                self.note(
                    f"[red]SIGKILL[/] worker {victim} holding {count} leases; "
                    "its supervisor restarts it"
                )
                self.step = "wait-restart"
        elif self.step == "wait-restart":
            if len(self.fleet.workers(blue)) >= 2 and fraction >= 0.35:
                self.deploy_queue = self.fleet.workers(blue)
                self.note(f"[yellow]deploy[/]: rolling restart of {len(self.deploy_queue)} workers")
                self.step = "deploy"
        elif self.step == "deploy":
            self._deploy(blue)
        elif self.step == "scale" and done < self.total:
            green = self.fleet.start("scale-out", 1)
            self.note(f"[green]scale out[/]: + 1 worker (supervisor {green.proc.pid})")
            self.step = "done"

    def _deploy(self, blue: Supervisor) -> None:
        current = self.fleet.workers(blue)
        if self.deploy_old is None:
            if not self.deploy_queue:
                self.note("[yellow]deploy[/]: every worker replaced")
                self.step = "scale"
                return
            pid = self.deploy_queue.pop(0)
            if pid not in current:
                return
            held = self.obs.held_by(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            self.deploy_old = pid
            self.deploy_known = set(current)
            self.deploy_started = time.monotonic()
            self.note(f"[yellow]deploy[/]: SIGTERM worker {pid} ({held} leases): drain, hand back")
            return
        new = [p for p in current if p not in self.deploy_known]
        replaced = self.deploy_old not in current and any(self.obs.worker_id(p) for p in new)
        if replaced or time.monotonic() - self.deploy_started > 30:
            fresh = [p for p in new if self.obs.worker_id(p)]
            took = time.monotonic() - self.deploy_started
            self.note(
                f"[yellow]deploy[/]: worker {self.deploy_old} replaced by "
                f"{fresh[-1] if fresh else '?'} in {took:.1f}s"
            )
            self.deploy_old = None


# --------------------------------------------------------------------------- the view


def render(scn: Scenario, sent: int, done: int, seen: dict[int, str]) -> Group:
    obs, fleet = scn.obs, scn.fleet
    workers = Table(title="workers", expand=True)
    for col in ("pid", "supervisor", "state", "leases", "running", "done", "docs/s"):
        workers.add_column(col, justify="right" if col not in ("state", "supervisor") else "left")
    for wid, pid, state, held, running, finished, age in obs.workers():
        if pid not in seen:
            seen[pid] = fleet.supervisor_of(pid)
        alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        label = state if alive or state == "gone" else f"[red]dead[/] ({float(age):.0f}s silent)"
        style = "dim" if state == "gone" else ""
        workers.add_row(
            str(pid), seen[pid], label, str(held), str(running), str(finished),
            f"{obs.rate(wid, int(finished)):.0f}", style=style,
        )  # fmt: skip
    depth = Table(title="queue by source (partition key)", expand=True)
    for col in ("source", "waiting", "running", "finished"):
        depth.add_column(col, justify="left" if col == "source" else "right")
    for key, queued, running, finished in obs.depth():
        depth.add_row(str(key), str(queued), str(running), str(finished))
    c = obs.counters()
    elapsed = time.monotonic() - scn.started
    stats = (
        f"documents {done}/{sent} finished · indexed {c['indexed']} · failed {c['failed']} · "
        f"{done / max(elapsed, 0.1):.0f} docs/s\n"
        f"takeovers {c['takeovers']} · handed back by drains {c['released']} · "
        f"worker restarts {fleet.restarts()} · duplicate index writes {c['duplicate_writes']}"
    )
    events = "\n".join(scn.events) or "[dim]waiting for the fleet…[/]"
    return Group(
        Panel(stats, title=f"tenure demo · {elapsed:.0f}s", border_style="cyan"),
        workers,
        depth,
        Panel(events, title="events"),
    )


# --------------------------------------------------------------------------- main


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    global SCHEMA
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000, help="corpus size (default 2000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--corpus", type=Path, default=ROOT / ".demo-corpus")
    parser.add_argument("--workers", type=int, default=2, help="supervised worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="tasks at once per worker")
    parser.add_argument(
        "--fetch-latency-ms",
        type=float,
        default=40.0,
        help="simulated fetch of each file from object storage, so the run is long enough "
        "to watch (default 40)",
    )
    parser.add_argument("--schema", default=SCHEMA, help=f"tenure's schema (default {SCHEMA})")
    parser.add_argument("--plain", action="store_true", help="print events instead of a live view")
    parser.add_argument("--summary-json", type=Path, help="also write the final numbers here")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    from tenure import Client, ConfigError

    try:
        client = Client(schema=args.schema)  # DSN: TENURE_DATABASE_URL, else the embedded one
    except ConfigError as exc:
        parser.error(str(exc))
    SCHEMA = client.schema
    os.environ["TENURE_DOCS_SCHEMA"] = SCHEMA
    sys.path.insert(0, str(ROOT))
    from examples.documents import corpus, index
    from examples.documents import ingest as ingesting

    dsn = client.dsn  # joins (or starts) the embedded server when no DSN is set
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}_index CASCADE")
    where = "embedded PostgreSQL" if "TENURE_DATABASE_URL" not in os.environ else dsn.split("?")[0]
    console.print(f"[bold]tenure demo[/]: a document fleet on the {where} (schema {SCHEMA})")

    with _bar() as bar:
        t = bar.add_task("corpus", total=args.docs)
        manifest = corpus.generate(
            args.corpus, args.docs, args.seed, progress=lambda n: bar.advance(t, n)
        )
    console.print(
        f"corpus: {len(manifest.files)} documents in {args.corpus} "
        f"({len(manifest.corrupt)} corrupt, {len(manifest.huge)} huge)"
    )

    log_dir = args.corpus / ".logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TENURE_DOCS_SCHEMA": SCHEMA,
        "TENURE_DOCS_FETCH_LATENCY_MS": f"{args.fetch_latency_ms:g}",
    }
    fleet = Fleet(env, log_dir, args.concurrency)
    code = 1
    try:
        fleet.start("main", args.workers)
        console.print(
            f"fleet: tenure worker {APP} --processes {args.workers} "
            f"--concurrency {args.concurrency} --lease {LEASE_S:g}s (logs in {log_dir})"
        )
        started = time.monotonic()
        with _bar() as bar:
            t = bar.add_task("ingest", total=None)
            report = ingesting.ingest(
                args.corpus, progress=lambda d, n: bar.update(t, completed=d, total=n)
            )
        by_source = ", ".join(f"{k} {v}" for k, v in sorted(report.by_source.items()))
        console.print(
            f"ingested {report.sent} documents ({by_source}); {report.large} large ones "
            "run in child processes with a timeout"
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"SET search_path = {SCHEMA}")
            obs = Observer(conn, report.task_ids)
            scn = Scenario(fleet, obs, report.sent, started=started)
            _watch(scn, report.sent, args.plain)
            elapsed = time.monotonic() - started
            summary = _summary(scn, report, manifest, elapsed, conn, index, ingesting)
        if args.summary_json:
            args.summary_json.write_text(json.dumps(summary, indent=1, default=str))
        code = 0 if summary["ok"] else 1
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted[/]: stopping every worker the demo started")
        code = 130
    finally:
        fleet.stop()
        console.print(
            "fleet stopped" + (" (no process left behind)" if not fleet.descendants() else "")
        )
    return code


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _watch(scn: Scenario, sent: int, plain: bool) -> None:
    seen: dict[int, str] = {}
    deadline = time.monotonic() + max(300.0, sent / 5)

    def step() -> bool:
        done = scn.obs.finished()
        scn.tick(done)
        return done >= sent and scn.step not in ("wait-restart", "deploy")

    if plain or not console.is_terminal:
        printed = 0
        while not step() and time.monotonic() < deadline:
            for line in scn.log[printed:]:
                console.print(line, markup=True, highlight=False)
            printed = len(scn.log)
            time.sleep(0.2)
        for line in scn.log[printed:]:
            console.print(line)
        return
    with Live(render(scn, sent, 0, seen), console=console, refresh_per_second=4) as live:
        while not step() and time.monotonic() < deadline:
            live.update(render(scn, sent, scn.obs.finished(), seen))
            time.sleep(0.25)
        live.update(render(scn, sent, scn.obs.finished(), seen))


def _summary(
    scn: Scenario,
    report: Any,
    manifest: Any,
    elapsed: float,
    conn: psycopg.Connection[Any],
    index: Any,
    ingesting: Any,
) -> dict[str, Any]:
    obs = scn.obs
    out = ingesting.outcomes(conn, report.task_ids)
    c = obs.counters()
    failed = out["failed"]
    failed_paths = {path for path, _state, _reason in failed}
    expected_corrupt = set(manifest.corrupt)
    reruns = int(
        obs.q(
            """SELECT count(*) FROM attempts a WHERE a.attempt > 1 AND a.task_id = ANY(%s)
               AND a.outcome <> 'released'
               AND EXISTS (SELECT 1 FROM attempts b WHERE b.task_id = a.task_id
                           AND b.attempt < a.attempt AND b.outcome <> 'released')""",
            (report.task_ids,),
        )[0][0]
    )
    takeovers: list[float] = []
    for _pid, wid, killed_at, _held in scn.kills:
        rows = obs.q(
            """SELECT extract(epoch FROM b.started_at - %s) FROM attempts a
               JOIN attempts b ON b.task_id = a.task_id AND b.attempt = a.attempt + 1
               WHERE a.worker_id = %s AND a.outcome = 'lease_expired'""",
            (killed_at, wid),
        )
        takeovers += [float(r[0]) for r in rows]
    peak = obs.q(
        """SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM attempts
           WHERE outcome IN ('succeeded', 'error') GROUP BY worker_id) s"""
    )[0][0]
    indexed = c["indexed"]
    ok = (
        indexed == report.sent - len(failed)
        and all(reason for _p, _s, reason in failed)
        and failed_paths == expected_corrupt
        and sum(out["states"].values()) == report.sent
    )
    table = Table(title="tenure demo: documents through a kill, a deploy and a scale-out")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("documents ingested", str(report.sent))
    table.add_row("indexed (one row each)", f"{indexed} = {report.sent} − {len(failed)} corrupt")
    table.add_row(
        "failed, with a reason", f"{len(failed)} (corrupt in the corpus: {len(expected_corrupt)})"
    )
    table.add_row(
        "duplicates run",
        f"{reruns} re-runs, {c['duplicate_writes']} repeated index writes (upserts: no extra row)",
    )
    for pid, _wid, _at, held in scn.kills:
        if takeovers:
            table.add_row(
                f"takeover after SIGKILL of {pid}",
                f"{len(takeovers)}/{held} tasks in {min(takeovers):.1f}–{max(takeovers):.1f}s "
                f"(lease {LEASE_S:g}s)",
            )
    table.add_row(
        "drains / restarts",
        f"{c['released']} tasks handed back by SIGTERM, {scn.fleet.restarts()} worker restarts",
    )
    table.add_row(
        "throughput",
        f"{report.sent / elapsed:.0f} docs/s over {elapsed:.1f}s (best worker {peak} docs)",
    )
    console.print(table)
    if failed:
        console.print("[bold]failed documents[/]:")
        for path, state, reason in failed:
            where = os.path.relpath(path, manifest_root(manifest))
            console.print(f"  {state} {escape(where)}: {escape(reason)}")
    searches = []
    for phrase, path in sorted(manifest.planted.items()):
        if path.endswith((".pdf", ".docx")):
            hits = index.search(conn, f'"{phrase}"', limit=3, schema=f"{SCHEMA}_index")
            top = hits[0] if hits else None
            searches.append({"query": phrase, "expected": path, "top": top.path if top else None})
            if top:
                where = os.path.relpath(top.path, manifest_root(manifest))
                console.print(
                    f'search "{phrase}" → {escape(where)} '
                    f"(rank {top.rank:.2f}): …{_marked(top.snippet)}…"
                )
    ok = ok and all(s["top"] == s["expected"] for s in searches)
    console.print(
        "[green]check passed[/]: indexed = ingested − corrupt, "
        "every corrupt file failed with its reason"
        if ok
        else "[red]check failed[/]"
    )
    return {
        "ok": ok,
        "ingested": report.sent,
        "indexed": indexed,
        "failed": [{"path": p, "state": s, "reason": r} for p, s, r in failed],
        "corrupt_expected": sorted(expected_corrupt),
        "reruns": reruns,
        "duplicate_writes": c["duplicate_writes"],
        "takeover_seconds": takeovers,
        "kills": len(scn.kills),
        "released": c["released"],
        "restarts": scn.fleet.restarts(),
        "elapsed": elapsed,
        "events": scn.log,
        "searches": searches,
    }


def _marked(snippet: str) -> str:
    return escape(snippet).replace("«", "[bold yellow]").replace("»", "[/]")


def manifest_root(manifest: Any) -> str:
    return os.path.commonpath(manifest.files) if manifest.files else "/"


if __name__ == "__main__":
    sys.exit(main())
