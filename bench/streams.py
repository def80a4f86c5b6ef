"""Steady streams and spikes, for ``make bench`` (phases ``streams`` and ``spike``) and
``make bench-stream`` (``bench/stream.py``): one piece of code serves both.

A run starts a system's worker processes on a fresh schema or database, waits until
they are up, then starts that system's sender process, which sends batches on a fixed
clock of ``tick`` seconds (``bench/peers/common.py``; tenure's sender is
``bench/sender.py``) and reports the send rate it achieved. The tick sets a floor under
pickup: at a load of L (the stream over the drain rate) a batch takes L × tick to
drain even at the full drain rate, so its last task waits that long whatever the
system; ``make bench`` sends every 10 ms (a 50 % stream's floor is 5 ms), and
``make bench-stream`` keeps the 50 ms batches of the stall's reproduction. A spike,
when the plan has one, is a second sender process started ``spike_at`` seconds into
the stream that enqueues N tasks at once, marked so they can be told from the
stream's. After the sends, the run waits at most
``settle`` seconds for the queue to empty (a queue that stalls is measured, not waited
on forever), then reads every task's times back and computes the figures.

Times come from the database's own clock where the system records them:

- tenure: ``created_at`` of the task (``now()`` of the sending transaction), the
  ``started_at`` of its first attempt (``clock_timestamp()`` at the claim) and
  ``finished_at`` in ``finished_tasks``; pickup is claim minus send.
- PgQueuer: ``pgqueuer_log`` rows ``queued``, ``picked`` and ``successful`` (each the
  ``now()`` of its transaction); pickup is picked minus queued.
- Procrastinate: ``procrastinate_events`` ``deferred``, ``started`` and ``succeeded``;
  pickup is started minus deferred.
- Celery+Redis has no database: the sender's wall clock at publish and the task's
  wall clock when it starts (same host), written by the task itself; a no-op's start
  stands for its finish.

A second is *stalled* when no task finished in it although some task sent before it
began was still unfinished at its end. ``stall windows`` are the same test over every
(sliding) window of a given width, found as gaps between consecutive finishes.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import psycopg

from bench import harness as h
from bench.peers.common import TICK

TENURE_SCHEMA = "bench_stream"
Array = np.ndarray[Any, np.dtype[Any]]


@dataclass
class Plan:
    """What the sender does: ``rate`` tasks/s for ``seconds``; optionally a spike of
    ``spike`` tasks sent ``spike_at`` s after the stream began."""

    rate: float
    seconds: float
    tick: float = TICK  # seconds between the sender's batches
    spike: int = 0
    spike_at: float = 0.0
    settle: float = 30.0  # longest wait, after the sends, for the queue to empty
    warmup: float = 1.0  # the stream's first second is left out of the pickup figures


@dataclass
class Tasks:
    """Every task of one run, times in epoch seconds (NaN: had not happened)."""

    created: Array
    started: Array
    finished: Array
    spike: Array  # bool: sent by the spike, not the stream
    now: float  # when they were read, on the same clock


# -- systems ---------------------------------------------------------------------------------


class System:
    """One queue under test: its workers, its sender, and where its times are kept."""

    name = ""
    pickup = ""

    def __init__(self, dsn: str, concurrency: int) -> None:
        self.dsn = dsn
        self.concurrency = concurrency

    @contextmanager
    def prepared(self) -> Iterator[None]:
        yield

    def start_workers(self, fleet: h.Fleet, procs: int) -> None:
        raise NotImplementedError

    def ready(self, fleet: h.Fleet, procs: int) -> None:
        """Peers: give the workers time to connect and start listening."""
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            fleet.check_alive()
            time.sleep(0.2)

    def command(self, *args: str) -> tuple[list[str], dict[str, str] | None, Path]:
        raise NotImplementedError

    def outstanding(self, sent: int) -> int:
        raise NotImplementedError

    def collect(self, sent: int) -> Tasks:
        raise NotImplementedError


def _tasks(rows: list[tuple[Any, ...]], now: float) -> Tasks:
    if not rows:
        empty = np.zeros(0)
        return Tasks(empty, empty, empty, np.zeros(0, dtype=bool), now)
    cols = list(zip(*rows, strict=True))

    def floats(i: int) -> Array:
        return np.array([np.nan if x is None else x for x in cols[i]], dtype=float)

    return Tasks(floats(0), floats(1), floats(2), np.array(cols[3], dtype=bool), now)


def _db_now(db: psycopg.Connection[Any]) -> float:
    row = db.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


class Tenure(System):
    name = "tenure"
    pickup = (
        "claim (`attempts.started_at` of attempt 1, `clock_timestamp()`) minus send "
        "(`created_at`, `now()` of the sending transaction)"
    )

    def __init__(self, dsn: str, concurrency: int, schema: str = TENURE_SCHEMA) -> None:
        super().__init__(dsn, concurrency)
        self.schema = schema
        self.env = h.tenure_env(dsn, schema)

    @contextmanager
    def prepared(self) -> Iterator[None]:
        from tenure._db.migrate import migrate

        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as db:
            db.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            migrate(db, self.schema)
            self.db = db
            try:
                yield
            finally:
                db.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    def flags(self) -> list[str]:
        return ["--concurrency", str(self.concurrency), "--lease", "30s"]

    def start_workers(self, fleet: h.Fleet, procs: int) -> None:
        for _ in range(procs):
            fleet.start(h.tenure_worker_cmd(self.flags()), self.env)

    def ready(self, fleet: h.Fleet, procs: int) -> None:
        deadline = time.monotonic() + 60
        q = f"SELECT count(*) FROM {self.schema}.workers WHERE state = 'active'"
        while h.scalar(self.db, q) < procs:
            fleet.check_alive()
            if time.monotonic() > deadline:
                raise h.HarnessError(f"{procs} tenure workers not active after 60 s")
            time.sleep(0.05)
        time.sleep(0.5)

    def command(self, *args: str) -> tuple[list[str], dict[str, str] | None, Path]:
        mode, rest = args[0], args[1:]
        cmd = [sys.executable, str(h.ROOT / "bench" / "sender.py"), mode, self.dsn, *rest]
        return cmd, self.env, h.ROOT

    def outstanding(self, sent: int) -> int:
        return h.scalar(self.db, f"SELECT count(*) FROM {self.schema}.tasks")

    def collect(self, sent: int) -> Tasks:
        s = self.schema
        rows = self.db.execute(
            f"""
            SELECT extract(epoch FROM f.created_at)::float8,
                   extract(epoch FROM a.started_at)::float8,
                   extract(epoch FROM f.finished_at)::float8,
                   f.payload ? 'spike'
            FROM {s}.finished_tasks f
            LEFT JOIN {s}.attempts a ON a.task_id = f.id AND a.attempt = 1
            UNION ALL
            SELECT extract(epoch FROM t.created_at)::float8,
                   extract(epoch FROM coalesce(a.started_at, t.started_at))::float8,
                   NULL, t.payload ? 'spike'
            FROM {s}.tasks t
            LEFT JOIN {s}.attempts a ON a.task_id = t.id AND a.attempt = 1
            """
        ).fetchall()
        return _tasks(rows, _db_now(self.db))


class Peer(System):
    """PgQueuer (either batch size) or Procrastinate, each in a database of its own."""

    def __init__(self, dsn: str, concurrency: int, name: str) -> None:
        super().__init__(dsn, concurrency)
        self.name = name
        self.pgqueuer = name.startswith("pgqueuer")
        self.pickup = (
            "`pgqueuer_log` picked minus queued (each `now()` of its transaction)"
            if self.pgqueuer
            else "`procrastinate_events` started minus deferred"
        )

    @contextmanager
    def prepared(self) -> Iterator[None]:
        with h.fresh_database(self.dsn, f"bench_stream_{self.name}") as pdsn:
            self.pdsn = pdsn
            h.adapter_json(self.name, "setup", pdsn)
            with psycopg.connect(pdsn, autocommit=True) as db:
                self.db = db
                yield

    def start_workers(self, fleet: h.Fleet, procs: int) -> None:
        for _ in range(procs):
            cmd = h.adapter(self.name, "worker", self.pdsn, "--concurrency", str(self.concurrency))
            fleet.start(cmd, cwd=h.ADAPTERS)

    def command(self, *args: str) -> tuple[list[str], dict[str, str] | None, Path]:
        return h.adapter(self.name, args[0], self.pdsn, *args[1:]), None, h.ADAPTERS

    def outstanding(self, sent: int) -> int:
        if self.pgqueuer:
            return h.scalar(self.db, "SELECT count(*) FROM pgqueuer")
        return h.scalar(
            self.db,
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
        )

    def collect(self, sent: int) -> Tasks:
        if self.pgqueuer:
            q = """
                SELECT min(t) FILTER (WHERE status = 'queued'),
                       min(t) FILTER (WHERE status = 'picked'),
                       min(t) FILTER (WHERE status = 'successful'),
                       bool_or(entrypoint = 'noop_spike')
                FROM (SELECT job_id, status, entrypoint, extract(epoch FROM created)::float8 AS t
                      FROM pgqueuer_log) l
                GROUP BY job_id
            """
        else:
            q = """
                SELECT extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'deferred'))::float8,
                       extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'started'))::float8,
                       extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'succeeded'))::float8,
                       j.task_name = 'noop_spike'
                FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
                GROUP BY j.id, j.task_name
            """
        return _tasks(self.db.execute(q).fetchall(), _db_now(self.db))


class Celery(System):
    name = "celery"
    pickup = (
        "task start minus publish, both the host's wall clock (Celery+Redis keeps no "
        "timestamps of its own)"
    )

    def __init__(self, dsn: str, concurrency: int) -> None:
        super().__init__(dsn, concurrency)
        self.url = "redis://{}:{}/{}".format(*h.REDIS)
        self.log = h.ROOT / "bench" / "results" / "logs" / "celery-stream.stamps"

    @contextmanager
    def prepared(self) -> Iterator[None]:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.unlink(missing_ok=True)
        h.adapter_json("celery", "setup", self.url)
        try:
            yield
        finally:
            h.adapter_json("celery", "teardown", self.url)

    def start_workers(self, fleet: h.Fleet, procs: int) -> None:
        env = {**os.environ, "BENCH_STAMP_LOG": str(self.log)}
        for _ in range(procs):
            fleet.start(h.adapter("celery", "worker", self.url), env, cwd=h.ADAPTERS)

    def ready(self, fleet: h.Fleet, procs: int) -> None:
        deadline = time.monotonic() + 6.0  # celery worker takes a few seconds to start
        while time.monotonic() < deadline:
            fleet.check_alive()
            time.sleep(0.2)

    def command(self, *args: str) -> tuple[list[str], dict[str, str] | None, Path]:
        return h.adapter("celery", args[0], self.url, *args[1:]), None, h.ADAPTERS

    def _lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def outstanding(self, sent: int) -> int:
        return max(0, sent - len(self._lines()))

    def collect(self, sent: int) -> Tasks:
        rows: list[tuple[Any, ...]] = []
        for ln in self._lines():
            kind, pub, start = ln.split()
            rows.append((float(pub), float(start), float(start), kind == "x"))
        now = time.time()
        last = max((r[0] for r in rows), default=now)
        rows += [(last, None, None, False)] * max(0, sent - len(rows))
        return _tasks(rows, now)


def system(name: str, dsn: str, concurrency: int) -> System:
    if name == "tenure":
        return Tenure(dsn, concurrency)
    if name == "celery":
        return Celery(dsn, concurrency)
    return Peer(dsn, concurrency, name)


# -- processes -------------------------------------------------------------------------------


class Child:
    """A sender process whose JSON lines are read as they come."""

    def __init__(self, spec: tuple[list[str], dict[str, str] | None, Path], log: BinaryIO):
        cmd, env, cwd = spec
        self.what = " ".join(Path(c).name for c in cmd[:3])
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.startswith(b"{"):
                self.lines.put(json.loads(raw))

    def next(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    self.reader.join(2.0)  # its last line may still be on the way
                    if not self.lines.empty():
                        continue
                    raise h.HarnessError(
                        f"{self.what} exited {self.proc.returncode} (see the fleet log)"
                    ) from None
        self.stop()
        raise h.HarnessError(f"{self.what}: no report in {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- one run ---------------------------------------------------------------------------------


def run(sys_: System, plan: Plan, procs: int = 2, stall_window: float = 2.0) -> dict[str, Any]:
    """Run ``plan`` against ``sys_`` and return the figures (see :func:`analyze`)."""
    with sys_.prepared(), h.fleet(f"stream-{sys_.name}") as fleet:
        sys_.start_workers(fleet, procs)
        sys_.ready(fleet, procs)
        args = ["--rate", f"{plan.rate:.3f}", "--seconds", f"{plan.seconds:g}"]
        args += ["--tick", f"{plan.tick:g}"]
        sender = Child(sys_.command("stream", *args), fleet.log)
        spiker: Child | None = None
        try:
            started = sender.next(60)["started"]
            spike_out: dict[str, Any] | None = None
            if plan.spike:
                while time.time() < started + plan.spike_at:
                    fleet.check_alive()
                    time.sleep(min(0.05, max(0.0, started + plan.spike_at - time.time())))
                spiker = Child(
                    sys_.command("enqueue", str(plan.spike), "batch", "--spike"), fleet.log
                )
            sent_out = sender.next(plan.seconds + 120)
            if spiker is not None:
                spike_out = spiker.next(600)
        finally:
            sender.stop()
            if spiker is not None:
                spiker.stop()
        sent = int(sent_out["sent"]) + plan.spike
        deadline = time.monotonic() + plan.settle
        left = sys_.outstanding(sent)
        while left and time.monotonic() < deadline:
            fleet.check_alive()
            time.sleep(0.25)
            left = sys_.outstanding(sent)
        tasks = sys_.collect(sent)
    out = analyze(tasks, plan, stall_window)
    out.update(sender=sent_out, spike_send=spike_out, left=left, pickup_is=sys_.pickup)
    return out


# -- figures ---------------------------------------------------------------------------------


def nearest_rank(sorted_values: Array, q: float) -> float:
    """The q-th percentile (0–100) by nearest rank of an ascending array (inf allowed)."""
    n = len(sorted_values)
    if not n:
        return float("nan")
    k = max(0, min(n - 1, int(np.ceil(q / 100 * n)) - 1))
    return float(sorted_values[k])


def pickups(t: Tasks, mask: Array) -> Array:
    """Sorted pickup times of the masked tasks; one never started counts as infinite."""
    p = t.started[mask] - t.created[mask]
    p[np.isnan(p)] = np.inf
    return np.sort(p)


def quantiles(p: Array) -> dict[str, float]:
    return {
        "n": len(p),
        "p50": nearest_rank(p, 50),
        "p99": nearest_rank(p, 99),
        "p999": nearest_rank(p, 99.9),
        "max": float(p[-1]) if len(p) else float("nan"),
    }


def stall_gaps(created: Array, finished: Array, end: float, width: float) -> list[list[float]]:
    """Every stretch of at least ``width`` s with no finish while work sent before it
    stayed unfinished: [start, length] pairs (created and finished sorted)."""
    inner = finished[(finished > 0) & (finished < end)]
    points = np.concatenate([[0.0], inner, [end]])
    out = []
    for a, b in zip(points[:-1], points[1:], strict=True):
        if b - a < width:
            continue
        waiting = np.searchsorted(created, b - width, "right") - np.searchsorted(
            finished, a, "right"
        )
        if waiting > 0:
            out.append([float(a), float(b - a)])
    return out


def analyze(t: Tasks, plan: Plan, stall_window: float = 2.0) -> dict[str, Any]:
    """Per-second finishes, stalls, pickup quantiles of the stream's tasks and, when the
    plan has a spike, how the spike drained and when pickup came back."""
    if not len(t.created):
        raise h.HarnessError("no task was recorded")
    stream = ~t.spike
    t0 = float(np.nanmin(t.created[stream] if stream.any() else t.created))
    created = np.sort(t.created - t0)
    fin = np.sort(t.finished[~np.isnan(t.finished)] - t0)
    end = t.now - t0
    last = max(float(created[-1]), float(fin[-1]) if len(fin) else 0.0)
    nbins = int(np.floor(last)) + 1
    per_second = np.histogram(fin, bins=nbins, range=(0, nbins))[0]
    stalled = []
    for b in np.flatnonzero(per_second == 0):
        if b + 1 > end:
            continue
        if np.searchsorted(created, b, "right") > np.searchsorted(fin, b, "left"):
            stalled.append(int(b))
    steady = stream & (t.created - t0 >= plan.warmup)
    out: dict[str, Any] = {
        "plan": vars(plan),
        "t0": t0,
        "tasks": len(t.created),
        "unfinished": int(np.isnan(t.finished).sum()),
        "unstarted": int(np.isnan(t.started).sum()),
        "per_second": [int(x) for x in per_second],
        "stalled_seconds": stalled,
        "stall_windows": stall_gaps(created, fin, end, stall_window),
        "stall_window": stall_window,
        "pickup": quantiles(pickups(t, steady)),
        "pickup_p99_per_second": p99_per_second(t, steady, t0),
        "finish_rate": len(fin) / (fin[-1] - fin[0]) if len(fin) > 1 else float("nan"),
    }
    if t.spike.any():
        out["spike"] = spike_figures(t, stream, t0, plan)
    return out


def p99_per_second(t: Tasks, mask: Array, t0: float) -> list[float]:
    """The pickup p99 of the masked tasks sent in each second of the run (NaN: none
    sent): when a run's p99 is high, this says whether a few seconds or all of them."""
    p = t.started[mask] - t.created[mask]
    p[np.isnan(p)] = np.inf
    second = np.floor(t.created[mask] - t0).astype(int)
    out = []
    for b in range(int(second.max()) + 1 if len(second) else 0):
        out.append(nearest_rank(np.sort(p[second == b]), 99))
    return out


def queued_series(created: Array, started: Array, grid: Array) -> Array:
    """How many tasks were sent but not yet started at each instant of ``grid`` (both
    arrays sorted; a task never started counts as waiting to the end)."""
    return np.searchsorted(created, grid, "right") - np.searchsorted(started, grid, "right")


def started_per_second(started: Array, t0: float, t1: float) -> float:
    """Tasks started per second in [t0, t1] (``started`` sorted)."""
    n = np.searchsorted(started, t1, "right") - np.searchsorted(started, t0, "left")
    return float(n / (t1 - t0))


def spike_figures(t: Tasks, stream: Array, t0: float, plan: Plan) -> dict[str, Any]:
    """How a spike drained. The spike is drained when the queue is back to what the
    steady stream alone keeps waiting (its most in the 10 s before the spike, sampled
    every 10 ms): the stream's tasks sent during the spike queue behind it, so the last
    spike task's finish is not yet the end of the backlog it caused. The drain rate
    counts every task started from the spike's first send to that moment; the queued
    rate counts them from its last send."""
    rel_c = t.created - t0
    rel_f = t.finished - t0
    rel_s = t.started - t0
    ts = float(np.nanmin(rel_c[t.spike]))
    created = np.sort(rel_c)
    started = np.sort(np.where(np.isnan(rel_s), np.inf, rel_s))
    pre_grid = np.arange(max(plan.warmup, ts - 10.0), ts, 0.01)
    steady_queue = int(queued_series(created, started, pre_grid).max()) if len(pre_grid) else 0
    spike_done = not np.isnan(rel_f[t.spike]).any()
    td = float("nan")
    if spike_done:
        last_spike = float(np.nanmax(rel_f[t.spike]))
        grid = np.arange(ts, max(last_spike, float(created[-1])) + 0.01, 0.01)
        q = queued_series(created, started, grid)
        back = np.flatnonzero((q <= steady_queue) & (grid >= last_spike))
        if len(back):
            td = float(grid[back[0]])
    drained = td == td
    out: dict[str, Any] = {
        "n": int(t.spike.sum()),
        "sent_at": ts,
        "send_seconds": float(np.nanmax(rel_c[t.spike]) - ts),
        "drained": drained,
        "steady_queue": steady_queue,
        "drain_seconds": td - ts,
        "spike_finished": int((~np.isnan(rel_f[t.spike])).sum()),
    }
    if drained and td > ts:
        out["drain_rate"] = started_per_second(started, ts, td)
        # The same from the moment the whole spike was queued: while its sender still
        # inserts, the fleet shares the machine with it and can start no more than has
        # arrived, so this is the rate of the fleet itself on the backlog the spike left.
        te = ts + out["send_seconds"]
        if td > te:
            out["queued_rate"] = started_per_second(started, te, td)
    # pickup p99 of the stream's tasks over a 1 s window sliding by 0.1 s
    order = np.argsort(rel_c[stream])
    sc = rel_c[stream][order]
    sp = (t.started[stream] - t.created[stream])[order]
    sp[np.isnan(sp)] = np.inf
    pre_mask = (sc >= max(plan.warmup, ts - 10.0)) & (sc < ts)
    pre = nearest_rank(np.sort(sp[pre_mask]), 99)
    out["pre_p99"] = pre
    threshold = max(1.5 * pre, pre + 0.005)
    out["threshold"] = threshold
    series: list[tuple[float, float]] = []
    w = ts
    while w + 1.0 <= sc[-1]:
        lo, hi = np.searchsorted(sc, w, "left"), np.searchsorted(sc, w + 1.0, "left")
        if hi > lo:
            series.append((w, nearest_rank(np.sort(sp[lo:hi]), 99)))
        w += 0.1
    out["p99_series"] = [[round(a, 2), b] for a, b in series[::5]]
    recovered = float("nan")
    for i, (wi, _) in enumerate(series):
        ahead = [v for x, v in series[i:] if x < wi + 3.0]
        if wi + 3.0 <= series[-1][0] and all(v <= threshold for v in ahead):
            recovered = wi + 1.0 - ts
            break
    out["recovered_after"] = recovered
    # the same, counted from the end of the drain (while the backlog lasts, pickup is
    # the backlog's length over the drain rate)
    out["recovered_after_drain"] = max(0.0, ts + recovered - td) if drained else float("nan")
    after = stream & (rel_c > td) if drained else np.zeros_like(stream)
    out["after_drain"] = quantiles(pickups(t, after))
    return out
