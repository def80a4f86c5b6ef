"""The plumbing of ``make bench``: databases, processes, peers' environments, sampling.

Nothing here measures anything on its own; ``bench/run.py`` composes these into
phases. Every process the harness starts runs in a session of its own, so a Ctrl-C
reaches only the harness, which then stops them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = ("127.0.0.1", 6379, 15)  # host, port, database number used only by the bench
REDIS_URL = "redis://{}:{}/{}".format(*REDIS)
PEERS_DIR = ROOT / "bench" / ".peers"
ADAPTERS = ROOT / "bench" / "peers"
STOP_TIMEOUT = 30.0
SEND_BATCH = 5_000  # tasks per send_many when a backlog is enqueued

# What each peer's virtual environment gets from PyPI, and the adapter that drives it.
PEER_PACKAGES = {
    "pgqueuer": ["pgqueuer", "asyncpg"],
    "procrastinate": ["procrastinate"],
    "celery": ["celery[redis]"],
}

console = Console(width=120)
Proc = subprocess.Popen[bytes]


class HarnessError(Exception):
    """The benchmark itself failed (not a slow figure)."""


def revision() -> str:
    """The git commit benchmarked, marked dirty when src/ has uncommitted changes."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True)
    except OSError:
        return "unknown revision"
    return head.stdout.decode().strip() + (" + uncommitted src/ changes" if dirty.stdout else "")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def phase(name: str, loads: dict[str, tuple[str, str]]) -> Iterator[None]:
    """Print the load average before and after a phase and keep both for the report."""
    before = load()
    console.rule(f"[bold]{name}[/] — load average before: {before}")
    t0 = time.monotonic()
    try:
        yield
    finally:
        after = load()
        loads[name] = (before, after)
        console.print(f"[dim]{name}: {time.monotonic() - t0:.0f} s; load average after: {after}[/]")


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C, so the finally blocks stop the workers."""
    raise KeyboardInterrupt


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """``on_sigterm`` for the duration of the block; the previous handler after it."""
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_main(
    run: Callable[[list[str]], dict[str, Any]],
    print_report: Callable[[dict[str, Any]], None],
    argv: list[str],
    json_path: Path | None,
    interrupted: str,
) -> int:
    """A benchmark module's command line: ``run(argv)``, its report printed and, with
    ``--json``, its results written; a Ctrl-C or SIGTERM prints ``interrupted``, exit 130."""
    try:
        results = run(argv)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    print_report(results)
    if json_path:
        json_path.write_text(json.dumps(results, indent=1))
    return 0


# -- databases ------------------------------------------------------------------------------


def pick_dsn() -> tuple[str, str]:
    """The system PostgreSQL if it answers within 2 s, else the embedded server."""
    try:
        psycopg.connect(SYSTEM_DSN, connect_timeout=2).close()
        return SYSTEM_DSN, "system PostgreSQL"
    except psycopg.Error:
        pass
    os.environ.pop("TENURE_DATABASE_URL", None)
    from tenure._db.connect import resolve_dsn

    return resolve_dsn(None), "embedded PostgreSQL"


def server_version(db: psycopg.Connection[Any]) -> str:
    row = db.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def scalar(db: psycopg.Connection[Any], query: str, params: Any = None) -> int:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return int(row[0] or 0)


def checkpoint(db: psycopg.Connection[Any]) -> None:
    """Write out what earlier runs left in the server's buffers, before the next
    system's setup. Then no checkpoint begins inside that system's timed window: one
    that did would add full-page images to every page the run touches first, a cost
    that fell on whichever system happened to run at the time. A role that may not
    checkpoint skips this."""
    try:
        db.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        pass


@contextmanager
def fresh_database(dsn: str, name: str) -> Iterator[str]:
    """A database of its own for one peer run, dropped afterwards."""
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        yield as_url(make_conninfo(dsn, dbname=name))
    finally:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def as_url(dsn: str) -> str:
    """A DSN as a URL with host and port as query parameters, which libpq and asyncpg
    both read (a unix-socket directory included)."""
    parts = conninfo_to_dict(dsn)
    query = urlencode({k: parts[k] for k in ("host", "port", "password") if parts.get(k)})
    return f"postgresql://{quote(str(parts.get('user', '')))}@/{parts['dbname']}?{query}"


def redis_command(*words: str) -> Any:
    """One command on the bench's Redis database, over a bare RESP socket (tenure's
    environment has no Redis client and needs none)."""
    host, port, dbnum = REDIS
    with socket.create_connection((host, port), timeout=5) as sock:
        out = b""
        for cmd in (("SELECT", str(dbnum)), words):
            out += f"*{len(cmd)}\r\n".encode()
            for w in cmd:
                out += f"${len(w.encode())}\r\n{w}\r\n".encode()
        sock.sendall(out)
        data = b""
        while data.count(b"\r\n") < 2:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    reply = data.split(b"\r\n")[1]
    if reply.startswith(b"-"):
        raise HarnessError(f"redis: {reply.decode()}")
    return int(reply[1:]) if reply.startswith(b":") else reply.decode()


def celery_done(backlog: int) -> Callable[[], int]:
    """Celery's finished count in a drain: messages taken off the broker's list. Equal
    to finished tasks in the steady state (each worker holds at most its prefetch of 4
    in between)."""
    return lambda: backlog - int(redis_command("LLEN", "celery"))


def redis_up() -> bool:
    try:
        return redis_command("PING") == "+PONG"
    except OSError:
        return False


# -- peers' environments --------------------------------------------------------------------


def peer_python(name: str) -> Path:
    """The peer's own virtual environment, created and filled from PyPI on first use."""
    home = PEERS_DIR / name
    python = home / "bin" / "python"
    stamp = home / ".installed"
    wanted = " ".join(PEER_PACKAGES[name])
    if not (stamp.exists() and stamp.read_text() == wanted):
        console.print(f"installing {wanted} into {home.relative_to(ROOT)}")
        venv.create(home, with_pip=True, clear=True)
        out = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES[name]],
            capture_output=True,
        )
        if out.returncode != 0:
            raise HarnessError(f"pip install {wanted} failed: {out.stderr.decode()[-600:]}")
        stamp.write_text(wanted)
    return python


# Peers run in more than one configuration: name -> (adapter, the flags it adds).
PEER_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pgqueuer10": ("pgqueuer", ("--batch-size", "10")),  # PgQueuer's own default
}


def adapter(name: str, *args: str) -> list[str]:
    base, extra = PEER_VARIANTS.get(name, (name, ()))
    return [str(peer_python(base)), str(ADAPTERS / f"{base}_adapter.py"), *args, *extra]


def adapter_json(name: str, *args: str) -> dict[str, Any]:
    """Run an adapter command to completion and return the JSON line it printed."""
    out = subprocess.run(adapter(name, *args), capture_output=True, cwd=ADAPTERS)
    if out.returncode != 0:
        raise HarnessError(f"{name} {args[0]} failed: {out.stderr.decode()[-400:]}")
    lines = [ln for ln in out.stdout.decode().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def peer_done(pdb: psycopg.Connection[Any], name: str, backlog: int) -> Callable[[], int]:
    """ANALYZE a PostgreSQL peer's job table after its backlog is enqueued, and return
    its finished count: PgQueuer deletes a finished job, Procrastinate marks it."""
    if name.startswith("pgqueuer"):
        pdb.execute("ANALYZE pgqueuer")

        def done() -> int:
            return backlog - scalar(pdb, "SELECT count(*) FROM pgqueuer")
    else:
        pdb.execute("ANALYZE procrastinate_jobs")

        def done() -> int:
            return scalar(
                pdb,
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
            )

    return done


# -- processes ------------------------------------------------------------------------------


@dataclass
class Fleet:
    """Worker processes started by one phase; their stderr goes to one log file."""

    log: Any
    procs: list[Proc] = field(default_factory=list)

    def start(self, cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> Proc:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise HarnessError(f"worker pid {proc.pid} died (exit {proc.returncode})")

    def stop(self) -> None:
        """SIGTERM every live worker, wait up to STOP_TIMEOUT in all, then SIGKILL."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                console.print(f"[yellow]pid {proc.pid} ignored SIGTERM; killed[/]")
                proc.kill()
                proc.wait()


@contextmanager
def fleet(logname: str) -> Iterator[Fleet]:
    path = ROOT / "bench" / "results" / "logs" / f"{logname}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as log:
        f = Fleet(log)
        try:
            yield f
        finally:
            f.stop()


def tenure_env(dsn: str, schema: str, log: Path | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "TENURE_DATABASE_URL": dsn,
        "TENURE_BENCH_SCHEMA": schema,
        "PYTHONPATH": str(ROOT),
    }
    if log is not None:
        env["TENURE_BENCH_LOG"] = str(log)
    return env


def send_noops(task: Any, n: int) -> float:
    """Enqueue ``n`` no-op tasks, ``SEND_BATCH`` to a ``send_many``; the send rate."""
    t0 = time.perf_counter()
    for start in range(0, n, SEND_BATCH):
        task.send_many([{}] * min(SEND_BATCH, n - start))
    return n / (time.perf_counter() - t0)


def wait_active(
    db: psycopg.Connection[Any], schema: str, n: int, fleet: Fleet, timeout: float = 60.0
) -> None:
    """Wait until ``n`` tenure workers of ``schema`` are active."""
    deadline = time.monotonic() + timeout
    q = f"SELECT count(*) FROM {schema}.workers WHERE state = 'active'"
    while scalar(db, q) < n:
        fleet.check_alive()
        if time.monotonic() > deadline:
            raise HarnessError(f"{n} workers not active after {timeout:.0f} s")
        time.sleep(0.05)


def tenure_worker_cmd(flags: list[str], app: str = "bench.bench_tasks:reg") -> list[str]:
    return [
        sys.executable,
        "-m",
        "tenure",
        "worker",
        app,
        *flags,
        "--log-level",
        "warning",
    ]


# -- sampling -------------------------------------------------------------------------------


@dataclass
class Drain:
    """One drain run: the sampled steady-state rate and the samples it came from, and
    the whole-backlog rate (first start to last finish) once it is known."""

    rate: float
    done: int
    seconds: float
    samples: list[tuple[float, int]]
    backlog: int = 0
    whole: float = float("nan")  # tasks/s over the whole backlog
    whole_seconds: float = float("nan")
    whole_clock: str = ""  # where the whole-backlog times came from


STALL_SECONDS = 30.0  # a drain that finished nothing for this long has stopped


def sample_drain(
    count: Callable[[], int],
    backlog: int,
    fleet: Fleet,
    *,
    warmup: float,
    max_seconds: float,
    start_timeout: float = 60.0,
    finish_timeout: float = 0.0,
) -> Drain:
    """Sample the finished count every 0.5 s (a count(*) is not free, and the
    backlogs are large). The clock starts at the first finished task; the
    steady-state window runs from ``warmup`` seconds later until 90 % of the backlog
    is done or ``max_seconds`` have passed. With ``finish_timeout``, sampling goes on
    until the whole backlog is done (at most that many seconds after the first
    finish, or longer while it still finishes tasks), so the whole-backlog rate can be
    read afterwards; a drain that stops is an error. A last window sample that finds
    the whole backlog done is left out when the window has another: the drain ended
    at some unknown moment before it, and the idle time after would count against the
    rate. The whole backlog's rate here (``whole``) is from these samples, first
    sample showing a finish to first showing all done; callers replace it with the
    database's times where the system records them."""
    t_begin = t_moved = time.monotonic()
    samples: list[tuple[float, int]] = []
    t_first: float | None = None
    t_window_end: float | None = None
    while True:
        now, done = time.monotonic(), count()
        samples.append((now, done))
        if t_first is None:
            fleet.check_alive()
            if done > 0:
                t_first = now
            elif now - t_begin > start_timeout:
                raise HarnessError(f"no task finished {start_timeout:.0f} s after start")
        if (
            t_first is not None
            and t_window_end is None
            and (done >= 0.9 * backlog or now - t_first >= warmup + max_seconds)
        ):
            t_window_end = now
        if t_window_end is not None:
            if not finish_timeout or done >= backlog:
                break
            assert t_first is not None
            # Past the time allowed, a drain that still finishes tasks goes on (a probe
            # of a small backlog can overrate a system several times), up to four times
            # that; one that finished nothing for STALL_SECONDS is an error at once.
            moved = len(samples) < 2 or done > samples[-2][1]
            if moved:
                t_moved = now
            late = now - t_first > finish_timeout
            if (late and now - t_moved > STALL_SECONDS) or now - t_first > 4 * finish_timeout:
                raise HarnessError(
                    f"backlog not drained {now - t_first:.0f} s after the first finish "
                    f"({done:,} of {backlog:,}; none finished in the last "
                    f"{now - t_moved:.0f} s)"
                )
            fleet.check_alive()
        time.sleep(0.5)
    fleet.check_alive()
    assert t_first is not None and t_window_end is not None
    window = [(t, d) for t, d in samples if t_first + warmup <= t <= t_window_end]
    if len(window) < 2:  # the backlog went faster than the warm-up: use what there is
        window = [(t, d) for t, d in samples if t_first <= t <= t_window_end]
    if len(window) > 2 and window[-1][1] >= backlog:
        window.pop()
    (t0, d0), (t1, d1) = window[0], window[-1]
    rel = [(t - t_first, d) for t, d in samples if t >= t_first]
    out = Drain(float("nan"), d1 - d0, t1 - t0, rel, backlog)
    t_all = next((t for t, d in samples if d >= backlog), None)
    if t_all is not None and t_all > t_first:
        out.whole_seconds = t_all - t_first
        out.whole = backlog / out.whole_seconds
        out.whole_clock = "harness samples (0.5 s apart)"
    if t1 > t0:
        out.rate = (d1 - d0) / (t1 - t0)
    elif not finish_timeout:  # a whole-backlog drain (a probe) may be too short for a window
        raise HarnessError("drain window too short to measure; raise the backlog")
    return out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]
