"""``make bench``: tenure beside PgQueuer, Procrastinate, Celery+Redis and a bare-SQL floor.

Phases (each bounded, sizes from flags and printed, load average before/after each):
enqueue and drain (every system, 1 and 2 worker processes, medians of ``--repeats``),
steady streams at ``--levels`` % of each system's own 2-process drain rate and a spike
on a 25 % stream (``bench/streams.py``; every system but the floor, which has no
sender), pickup latency (idle and under 50 % load), takeover after SIGKILL, rolling deploy,
scale-out (``bench/scale_out.py``'s runs), one worker's memory and connections, workers
behind a delayed link (``bench/netem.py``) and CPU-bound parsing (``bench/parsing.py``).
The table goes to the terminal and to ``bench/results/latest.md``, plots beside it.

Drain backlogs: a probe drain of a small backlog (2 processes) estimates each
system's rate, and its backlog is sized to 1.25 × ``--drain-seconds`` (20) of that,
printed. Two rates per drain: the whole backlog's, first start to last finish from the
database's own timestamps where the system keeps them (the targets are on this one),
and the sampled window: the harness counts finished tasks every 0.5 s, the clock
starts at the first finished task and the window runs from ``--warmup`` s later until
90 % of the backlog is done or ``--max-window`` s have passed. The machine is shared,
so figures are noisy: read the ratios, which come from the same run. Every system
gets ``--concurrency`` slots per process, 100 by default: the floor claims batches of
100, so tenure's claims (free slots plus a quarter of prefetch) and the floor's are
the same size. A no-op drain is bound by per-batch costs: with 64 slots tenure
finished about 12 % fewer tasks per second on this machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness as h  # noqa: E402
from bench import report  # noqa: E402
from bench.harness import console  # noqa: E402

SCHEMA = "bench_tenure"
FLOOR_SCHEMA = "bench_floor"


class Bench:
    def __init__(self, args: argparse.Namespace, dsn: str, db: psycopg.Connection[Any]) -> None:
        self.args = args
        self.dsn = dsn
        self.db = db
        self.r: dict[str, Any] = {"loads": {}, "drain": {}, "enqueue": {}, "peers": {}}
        self.probe_rates: dict[str, float] = {}
        self.logdir = h.ROOT / "bench" / "results" / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        os.environ["TENURE_DATABASE_URL"] = dsn
        from bench import bench_tasks

        self.t = bench_tasks

    # -- tenure helpers -------------------------------------------------------------------

    def reset(self) -> None:
        from bench import bench_rated

        self.db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        self.t.reg.client.close()  # the next send reconnects and migrates the fresh schema
        bench_rated.reg.client.close()

    def count(self, sql: str, params: Any = None) -> int:
        return h.scalar(self.db, sql, params)

    def flags(
        self, *, concurrency: int, lease: str = "30s", extra: tuple[str, ...] = ()
    ) -> list[str]:
        return ["--concurrency", str(concurrency), "--lease", lease, *extra]

    def wait_active(self, n: int, fleet: h.Fleet, timeout: float = 60.0) -> None:
        h.wait_active(self.db, SCHEMA, n, fleet, timeout)

    def send_many(self, n: int, *, rated: bool = False) -> float:
        if rated:
            from bench import bench_rated

            return h.send_noops(bench_rated.noop_rated, n)
        return h.send_noops(self.t.noop, n)

    # -- enqueue + drain ------------------------------------------------------------------

    def tenure_single(self) -> float:
        self.reset()
        self.t.noop.send({})  # connect and migrate outside the timing
        n = self.args.single
        t0 = time.perf_counter()
        for _ in range(n):
            self.t.noop.send({})
        return n / (time.perf_counter() - t0)

    def floor_single(self) -> float:
        """One-row INSERTs, each committed durably: what any send is bound by here."""
        floor = [sys.executable, str(h.ROOT / "bench" / "floor.py")]
        subprocess.run([*floor, "setup", self.dsn, FLOOR_SCHEMA, "0"], check=True)
        out = subprocess.run(
            [*floor, "single", self.dsn, FLOOR_SCHEMA, str(self.args.single)],
            check=True,
            capture_output=True,
        )
        return float(json.loads(out.stdout.decode().strip().splitlines()[-1])["rate"])

    def finish_timeout(self, name: str, backlog: int, procs: int) -> float:
        """How long a drain may take before it counts as stuck: three times what the
        probe predicts (twice that for one process), at least a minute."""
        rate = self.probe_rates.get(name)
        if not rate:
            return 600.0
        return 60.0 + 3 * (2 / procs) * backlog / rate

    def tenure_drain(self, procs: int, backlog: int, *, rated: bool = False) -> h.Drain:
        """A drain of tenure's no-op; ``rated``: of the one under a rate limit far
        above the drain rate (what the bucket costs a claim)."""
        a = self.args
        self.reset()
        rate = self.send_many(backlog, rated=rated)
        if not rated:
            self.r["enqueue"].setdefault("tenure", {}).setdefault("batch", []).append(rate)
        self.db.execute(f"ANALYZE {SCHEMA}.tasks")
        env = h.tenure_env(self.dsn, SCHEMA)
        with h.fleet("tenure-drain") as fleet:
            app = "bench.bench_rated:reg" if rated else "bench.bench_tasks:reg"
            for _ in range(procs):
                fleet.start(h.tenure_worker_cmd(self.tenure_drain_flags(), app), env)
            d = h.sample_drain(
                lambda: self.count(f"SELECT count(*) FROM {SCHEMA}.finished_tasks"),
                backlog,
                fleet,
                warmup=a.warmup,
                max_seconds=a.max_window,
                finish_timeout=self.finish_timeout("tenure", backlog, procs),
            )
        whole_from_db(
            d,
            self.db,
            f"SELECT (SELECT min(started_at) FROM {SCHEMA}.attempts), "
            f"(SELECT max(finished_at) FROM {SCHEMA}.finished_tasks)",
            "attempts.started_at to finished_tasks.finished_at",
        )
        return d

    def tenure_drain_flags(self) -> list[str]:
        return self.flags(concurrency=self.args.concurrency)

    def floor_drain(self, procs: int, backlog: int) -> h.Drain:
        a = self.args
        floor = [sys.executable, str(h.ROOT / "bench" / "floor.py")]
        subprocess.run([*floor, "setup", self.dsn, FLOOR_SCHEMA, str(backlog)], check=True)
        try:
            with h.fleet("floor") as fleet:
                for _ in range(procs):
                    fleet.start([*floor, "worker", self.dsn, FLOOR_SCHEMA])
                d = h.sample_drain(
                    lambda: self.count(f"SELECT count(*) FROM {FLOOR_SCHEMA}.history"),
                    backlog,
                    fleet,
                    warmup=a.warmup,
                    max_seconds=a.max_window,
                    finish_timeout=self.finish_timeout("floor", backlog, procs),
                )
            whole_from_db(
                d,
                self.db,
                f"SELECT min(started_at), max(finished_at) FROM {FLOOR_SCHEMA}.history",
                "history.started_at (claim) to history.finished_at",
            )
            return d
        finally:
            self.db.execute(f"DROP SCHEMA IF EXISTS {FLOOR_SCHEMA} CASCADE")

    def peer_drain(self, name: str, procs: int, backlog: int, *, single: bool = True) -> h.Drain:
        a = self.args
        pgqueuer = name.startswith("pgqueuer")
        if name == "celery":
            return self._celery_drain(procs, backlog, single=single)
        with h.fresh_database(self.dsn, f"bench_{name}") as dsn:
            h.adapter_json(name, "setup", dsn)
            if procs == 1 and single:  # single sends once per peer, on the fresh database
                single_out = h.adapter_json(name, "enqueue", dsn, str(a.single), "single")
                self.r["enqueue"].setdefault(name, {}).setdefault("single", []).append(
                    single_out["rate"]
                )
                with psycopg.connect(dsn, autocommit=True) as pdb:
                    pdb.execute(
                        "TRUNCATE pgqueuer, pgqueuer_log"
                        if pgqueuer
                        else "DELETE FROM procrastinate_jobs"
                    )
            fill = h.adapter_json(name, "enqueue", dsn, str(backlog), "batch")
            self.r["enqueue"].setdefault(name, {}).setdefault("batch", []).append(fill["rate"])
            with psycopg.connect(dsn, autocommit=True) as pdb:
                done = h.peer_done(pdb, name, backlog)
                with h.fleet(name) as fleet:
                    for _ in range(procs):
                        fleet.start(
                            h.adapter(name, "worker", dsn, "--concurrency", str(a.concurrency)),
                            cwd=h.ADAPTERS,
                        )
                    d = h.sample_drain(
                        done,
                        backlog,
                        fleet,
                        warmup=a.warmup,
                        max_seconds=a.max_window,
                        finish_timeout=self.finish_timeout(name, backlog, procs),
                    )
                if pgqueuer:
                    whole_from_db(
                        d,
                        pdb,
                        "SELECT min(created) FILTER (WHERE status = 'picked'), "
                        "max(created) FILTER (WHERE status = 'successful') FROM pgqueuer_log",
                        "pgqueuer_log picked to successful",
                    )
                else:
                    whole_from_db(
                        d,
                        pdb,
                        "SELECT min(at) FILTER (WHERE type = 'started'), "
                        "max(at) FILTER (WHERE type = 'succeeded') FROM procrastinate_events",
                        "procrastinate_events started to succeeded",
                    )
                return d

    def _celery_drain(self, procs: int, backlog: int, *, single: bool = True) -> h.Drain:
        a = self.args
        url = h.REDIS_URL
        h.adapter_json("celery", "setup", url)
        try:
            if procs == 1 and single:
                single_out = h.adapter_json("celery", "enqueue", url, str(a.single), "single")
                self.r["enqueue"].setdefault("celery", {}).setdefault("single", []).append(
                    single_out["rate"]
                )
                h.adapter_json("celery", "setup", url)
            fill = h.adapter_json("celery", "enqueue", url, str(backlog), "batch")
            self.r["enqueue"].setdefault("celery", {}).setdefault("batch", []).append(fill["rate"])
            with h.fleet("celery") as fleet:
                for _ in range(procs):
                    fleet.start(h.adapter("celery", "worker", url), cwd=h.ADAPTERS)
                # Celery keeps no times of its own: the whole-backlog rate is from the
                # harness's samples.
                return h.sample_drain(
                    h.celery_done(backlog),
                    backlog,
                    fleet,
                    warmup=a.warmup,
                    max_seconds=a.max_window,
                    finish_timeout=self.finish_timeout("celery", backlog, procs),
                )
        finally:
            h.adapter_json("celery", "teardown", url)

    def drain(self, name: str, procs: int, backlog: int, *, single: bool = True) -> h.Drain:
        if name == "tenure":
            return self.tenure_drain(procs, backlog)
        if name == "tenure-rated":
            return self.tenure_drain(procs, backlog, rated=True)
        if name == "floor":
            return self.floor_drain(procs, backlog)
        return self.peer_drain(name, procs, backlog, single=single)

    def probe(self, name: str) -> float:
        """A short 2-process drain of a small backlog: that system's whole-backlog rate,
        which sizes its real backlog and, when the drain phase did not run, its streams."""
        a = self.args
        fast = name.startswith(("tenure", "floor", "pgqueuer"))
        n = a.probe_backlog if fast else a.slow_probe_backlog
        h.checkpoint(self.db)
        kept = copy.deepcopy(self.r["enqueue"])
        d = self.drain(name, 2, n, single=False)
        self.r["enqueue"] = kept  # a probe's fill is no send-rate sample
        rate = d.whole if d.whole == d.whole else d.rate
        self.probe_rates[name] = rate
        self.r.setdefault("probes", {})[name] = {"backlog": n, "rate": rate}
        return rate

    def backlog_for(self, name: str) -> int:
        """``--drain-seconds`` (20) of this system's own work at 2 processes, with a
        quarter to spare against a probe that ran fast, within the flags' bounds."""
        a = self.args
        if n := fixed(a, name):
            return n
        return sized(a, self.probe_rates.get(name) or self.probe(name))

    def rate2(self, name: str) -> float:
        """This system's 2-process drain rate measured in this run: the median
        whole-backlog rate of the drain phase, else a probe drain's."""
        runs = self.r["drain"].get(name, {}).get(2, [])
        whole = [d.whole for d in runs if d.whole == d.whole]
        if whole:
            return h.median(whole)
        if runs:
            return h.median([d.rate for d in runs])
        return self.probe_rates.get(name) or self.probe(name)

    def drains(self) -> None:
        a = self.args
        systems = ["tenure", "tenure-rated", *self.peers, "floor"]
        for name in systems:
            self.r["drain"][name] = {1: [], 2: []}
        with h.phase("enqueue: single send", self.r["loads"]):
            rates, floors = [], []
            for _ in range(a.repeats):  # interleaved, so drift hits both alike
                rates.append(self.tenure_single())
                floors.append(self.floor_single())
            self.r["enqueue"].setdefault("tenure", {})["single"] = rates
            self.r["enqueue"].setdefault("floor", {})["single"] = floors
            console.print(f"tenure send ×{a.single}: " + ", ".join(f"{x:.0f}/s" for x in rates))
            console.print(
                f"bare INSERT + commit ×{a.single}: " + ", ".join(f"{x:.0f}/s" for x in floors)
            )
        with h.phase("drain: sizing each backlog by a probe drain", self.r["loads"]):
            backlogs = {}
            for name in systems:
                backlogs[name] = self.backlog_for(name)
                probe = self.probe_rates.get(name)
                console.print(
                    f"  {name:14} backlog {backlogs[name]:>9,}"
                    + (
                        f" (probe {probe:,.0f}/s at 2 procs: about "
                        f"{backlogs[name] / probe:.0f} s of its work)"
                        if probe
                        else " (fixed by flag)"
                    )
                )
            self.r["backlogs"] = backlogs
        for repeat in range(a.repeats):
            with h.phase(f"drain, run {repeat + 1}/{a.repeats}", self.r["loads"]):
                for procs in (1, 2):
                    for name in systems:  # interleaved, so drift hits every system alike
                        h.checkpoint(self.db)
                        d = self.drain(name, procs, backlogs[name])
                        self.r["drain"][name][procs].append(d)
                        console.print(
                            f"  {name:14} {procs} proc: window {d.rate:8.0f} tasks/s "
                            f"({d.done} in {d.seconds:.1f} s); whole backlog {d.whole:8.0f}/s "
                            f"({d.backlog:,} in {d.whole_seconds:.1f} s)  load {h.load()}"
                        )
                        if procs == 2 and d.whole_seconds < a.drain_seconds and not fixed(a, name):
                            # the probe ran slow: size the later runs by this one
                            backlogs[name] = sized(a, d.whole)
                            self.r["backlogs"][name] = backlogs[name]
                            console.print(
                                f"  {name:14} lasted under {a.drain_seconds:g} s: backlog "
                                f"raised to {backlogs[name]:,} for the next runs"
                            )

    # -- streams and spike ----------------------------------------------------------------

    def streams(self) -> None:
        from bench import streams

        a = self.args
        levels = [float(x) for x in a.levels.split(",") if x]
        systems = ["tenure", *self.peers]
        rates = {name: self.rate2(name) for name in systems}
        out = self.r.setdefault("streams", {})
        out.update(
            levels=levels,
            seconds=a.stream_seconds,
            tick=a.stream_tick,
            rates=rates,
            runs={},
            pickup_is={},
        )
        for level in levels:
            with h.phase(f"streams: {level:g} % of each system's 2-proc drain", self.r["loads"]):
                for name in systems:  # interleaved, so drift hits every system alike
                    h.checkpoint(self.db)
                    sys_ = streams.system(name, self.dsn, a.concurrency)
                    out["pickup_is"][name] = sys_.pickup
                    plan = streams.Plan(
                        rate=rates[name] * level / 100,
                        seconds=a.stream_seconds,
                        tick=a.stream_tick,
                        settle=a.settle,
                    )
                    try:
                        res = streams.run(sys_, plan)
                    except (h.HarnessError, psycopg.Error) as exc:
                        res = {"error": str(exc).strip().splitlines()[0]}
                    out["runs"].setdefault(name, {})[f"{level:g}"] = res
                    console.print(f"  {name:14} {level:g} %: {stream_line(res)}", markup=False)

    def spike(self) -> None:
        from bench import streams

        a = self.args
        systems = ["tenure", *self.peers]
        out = self.r.setdefault("spike", {})
        for name in systems:
            rate2 = self.rate2(name)
            n = int(min(a.spike, a.spike_cap * rate2))
            drain_est = n / (0.75 * rate2)
            after = min(180.0, max(a.spike_after, 1.5 * drain_est + 10))
            plan = streams.Plan(
                rate=0.25 * rate2,
                seconds=a.spike_before + after,
                tick=a.stream_tick,
                spike=n,
                spike_at=a.spike_before,
                settle=max(a.settle, 2 * drain_est),
            )
            console.print(
                f"  {name:14} stream {plan.rate:,.0f}/s (25 % of {rate2:,.0f}/s), spike of "
                f"{n:,} at {a.spike_before:g} s, stream to {plan.seconds:.0f} s"
            )
            h.checkpoint(self.db)
            sys_ = streams.system(name, self.dsn, a.concurrency)
            try:
                res = streams.run(sys_, plan)
            except (h.HarnessError, psycopg.Error) as exc:
                res = {"error": str(exc).strip().splitlines()[0]}
            res["rate2"] = rate2
            res["pickup_is"] = sys_.pickup
            out[name] = res
            console.print(f"  {name:14} spike: {spike_line(res)}", markup=False)

    # -- network and CPU-bound parsing (bench/netem.py, bench/parsing.py) -------------------

    def netem(self) -> None:
        """``bench/netem.py``'s ``run_netem``: workers behind a delayed link."""
        argv = shlex.split(self.args.netem_flags)
        over = {} if "--systems" in argv else {"systems": ",".join(["tenure", *self.peers])}
        try:
            from bench import netem

            res = netem.run_netem(argv, **over)
            netem.print_report(res)
        except Exception as exc:  # a phase that cannot run here is reported, not fatal
            res = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
            console.print(f"[yellow]netem phase not run: {res['error']}[/]")
        self.r["netem"] = res

    def parsing(self) -> None:
        """``bench/parsing.py``'s ``run_parsing``: real document parsing vs Celery prefork."""
        try:
            from bench import parsing

            res = parsing.run_parsing(shlex.split(self.args.parsing_flags))
            parsing.print_report(res)
        except Exception as exc:  # a phase that cannot run here is reported, not fatal
            res = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
            console.print(f"[yellow]parsing phase not run: {res['error']}[/]")
        self.r["parsing"] = res

    # -- latency --------------------------------------------------------------------------

    def latency(self) -> None:
        a = self.args
        self.reset()
        log = self.logdir / "latency.starts"
        log.unlink(missing_ok=True)
        env = h.tenure_env(self.dsn, SCHEMA, log)
        self.t.probe.send({"t": 0})  # migrate outside the timing
        out: dict[str, Any] = {}
        with h.fleet("tenure-latency") as fleet:
            for _ in range(2):
                fleet.start(h.tenure_worker_cmd(self.tenure_drain_flags()), env)
            self.wait_active(2, fleet)
            time.sleep(1.0)
            with h.phase("latency: idle fleet", self.r["loads"]):
                out["idle"] = self._probes(log, a.probes)
            if a.load_rate:
                rate = a.load_rate
            else:
                with h.phase("latency: sustained send + drain", self.r["loads"]):
                    out["sustained"] = self._sustained()
                rate = 0.5 * out["sustained"]
                console.print(
                    f"  sustained with sends on this machine: {out['sustained']:.0f}/s; "
                    f"the loaded case sends half"
                )
            out["load_rate"] = rate
            with h.phase(f"latency: 50 % load ({rate:.0f}/s)", self.r["loads"]):
                stop = threading.Event()
                loader = threading.Thread(target=self._load, args=(rate, stop), daemon=True)
                loader.start()
                time.sleep(1.0)
                try:
                    out["loaded"] = self._probes(log, a.probes)
                finally:
                    stop.set()
                    loader.join()
        self.r["latency"] = out
        for k in ("idle", "loaded"):
            v = out[k]
            console.print(
                f"  pickup {k}: p50 {h.percentile(v, 50) * 1e3:.1f} ms, "
                f"p99 {h.percentile(v, 99) * 1e3:.1f} ms over {len(v)} probes"
            )

    def _probes(self, log: Path, n: int) -> list[float]:
        """Send ``n`` probes one at a time, 20 ms apart; each records its start."""
        base = len(log.read_text().splitlines()) if log.exists() else 0
        for _ in range(n):
            self.t.probe.send({"t": time.time()})
            time.sleep(0.02)
        deadline = time.monotonic() + 30
        while True:
            lines = log.read_text().splitlines()[base:] if log.exists() else []
            if len(lines) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if len(lines) < n:
            console.print(f"[yellow]only {len(lines)} of {n} probes started in 30 s[/]")
        return [float(ln.split()[3]) - float(ln.split()[4]) for ln in lines]

    def _sustained(self, seconds: float = 4.0) -> float:
        """Tasks/s the fleet finishes while this machine sends as fast as it can.

        The drain rate leaves out what sending costs; on one machine both share the
        cores, so "50 % load" is half of this end-to-end rate. The backlog left over is
        finished before the probes start.
        """
        stop = threading.Event()
        loader = threading.Thread(target=self._load, args=(0.0, stop), daemon=True)
        loader.start()
        finished = f"SELECT count(*) FROM {SCHEMA}.finished_tasks"
        try:
            time.sleep(1.0)
            n0, t0 = self.count(finished), time.monotonic()
            time.sleep(seconds)
            n1, t1 = self.count(finished), time.monotonic()
        finally:
            stop.set()
            loader.join()
        deadline = time.monotonic() + 60
        while self.count(f"SELECT count(*) FROM {SCHEMA}.tasks") and time.monotonic() < deadline:
            time.sleep(0.2)
        return (n1 - n0) / (t1 - t0)

    def _load(self, rate: float, stop: threading.Event) -> None:
        """Send no-op tasks at ``rate``/s in ten batches a second, from its own registry;
        with ``rate`` 0, batches of 1,000 back to back."""
        from tenure import Registry

        reg = Registry(self.dsn, schema=SCHEMA)

        @reg.task(name=self.t.noop.name)
        async def noop(payload: dict[str, Any]) -> None:
            pass

        per = max(1, round(rate / 10)) if rate > 0 else 1_000
        next_at = time.monotonic()
        while not stop.is_set():
            noop.send_many([{}] * per)
            if rate > 0:
                next_at += 0.1
                time.sleep(max(0.0, next_at - time.monotonic()))
        reg.client.close()

    # -- takeover -------------------------------------------------------------------------

    def takeover(self) -> None:
        a = self.args
        self.reset()
        env = h.tenure_env(self.dsn, SCHEMA)
        flags = self.flags(concurrency=8, lease=a.takeover_lease)
        console.print(f"workers: {' '.join(flags)}; {a.kills} kills, one leased task each")
        times: list[float] = []
        self.t.hold.send({"hold": 0.01})  # migrate, and warm the first attempt path
        with h.fleet("tenure-takeover") as fleet:
            for _ in range(2):
                fleet.start(h.tenure_worker_cmd(flags), env)
            self.wait_active(2, fleet)
            for k in range(a.kills):
                task_id = self.t.hold.send({"hold": 600}).id
                owner_pid = self._wait_owner(task_id)
                victim = next(p for p in fleet.procs if p.pid == owner_pid and p.poll() is None)
                killed_at = time.time()
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait()
                fleet.procs.remove(victim)
                fleet.start(h.tenure_worker_cmd(flags), env)  # as a supervisor would
                started = self._wait_attempt(task_id, 2, timeout=60)
                times.append(started - killed_at)
                console.print(
                    f"  kill {k + 1}/{a.kills}: next attempt started {times[-1]:.2f} s later"
                )
                self.wait_active(2, fleet)
        self.r["takeover"] = {"lease": a.takeover_lease, "times": times}

    def _wait_owner(self, task_id: int) -> int:
        q = (
            f"SELECT w.pid FROM {SCHEMA}.tasks t JOIN {SCHEMA}.workers w ON w.id = t.lease_owner "
            "WHERE t.id = %s AND t.state = 'running'"
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = self.db.execute(q, [task_id]).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.02)
        raise h.HarnessError(f"task {task_id} not claimed in 30 s")

    def _wait_attempt(self, task_id: int, attempt: int, timeout: float) -> float:
        q = (
            f"SELECT extract(epoch FROM started_at) FROM {SCHEMA}.attempts "
            "WHERE task_id = %s AND attempt = %s"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.db.execute(q, [task_id, attempt]).fetchone()
            if row:
                return float(row[0])
            time.sleep(0.05)
        raise h.HarnessError(f"task {task_id} attempt {attempt} not run in {timeout:.0f} s")

    # -- rolling deploy -------------------------------------------------------------------

    def rolling(self) -> None:
        a = self.args
        self.reset()
        log = self.logdir / "rolling.starts"
        log.unlink(missing_ok=True)
        env = h.tenure_env(self.dsn, SCHEMA, log)
        flags = self.flags(concurrency=a.concurrency, lease="15s", extra=("--drain-timeout", "30s"))
        console.print(
            f"workers: {' '.join(flags)}; stream {a.deploy_rate}/s of 20 ms tasks for "
            f"{a.deploy_seconds:g} s; each of 2 workers replaced, then SIGTERMed"
        )
        self.t.stream.send({"ms": 0})  # migrate before the stream starts
        sent: list[int] = []
        stop = threading.Event()

        def produce() -> None:
            per = max(1, round(a.deploy_rate / 10))
            next_at = time.monotonic()
            while not stop.is_set():
                handles = self.t.stream.send_many([{"ms": 20}] * per)
                sent.extend(x.id for x in handles)
                next_at += 0.1
                time.sleep(max(0.0, next_at - time.monotonic()))

        drains: list[float] = []
        with h.fleet("tenure-rolling") as fleet:
            for _ in range(2):
                fleet.start(h.tenure_worker_cmd(flags), env)
            self.wait_active(2, fleet)
            t_start = time.time()
            producer = threading.Thread(target=produce, daemon=True)
            producer.start()
            try:
                time.sleep(a.deploy_seconds / 4)
                for old in list(fleet.procs):
                    fleet.start(h.tenure_worker_cmd(flags), env)
                    self.wait_active(3, fleet)
                    t0 = time.monotonic()
                    old.send_signal(signal.SIGTERM)
                    old.wait(60)
                    drains.append(time.monotonic() - t0)
                    fleet.procs.remove(old)
                    if old.returncode != 0:
                        raise h.HarnessError(f"drained worker exited {old.returncode}")
                    time.sleep(a.deploy_seconds / 8)
                time.sleep(max(0.0, t_start + a.deploy_seconds - time.time()))
            finally:
                stop.set()
                producer.join()
            t_end = time.time()
            deadline = time.monotonic() + 60
            while (
                self.count(f"SELECT count(*) FROM {SCHEMA}.tasks") and time.monotonic() < deadline
            ):
                time.sleep(0.2)
        ids = set(sent)
        finished = {
            r[0]
            for r in self.db.execute(
                f"SELECT id FROM {SCHEMA}.finished_tasks WHERE state = 'succeeded' "
                "AND id = ANY(%s)",
                [sent],
            )
        }
        starts: dict[int, int] = {}
        for line in log.read_text().splitlines():
            tid = int(line.split()[1])
            starts[tid] = starts.get(tid, 0) + 1
        per_second = [
            int(r[0])
            for r in self.db.execute(
                "SELECT count(f.id) FROM generate_series(%s::bigint, %s::bigint) s "
                f"LEFT JOIN {SCHEMA}.finished_tasks f ON f.id = ANY(%s) "
                "AND floor(extract(epoch FROM f.finished_at))::bigint = s GROUP BY s ORDER BY s",
                [int(t_start) + 2, int(t_end) - 1, sent],
            )
        ]
        released = self.count(f"SELECT count(*) FROM {SCHEMA}.attempts WHERE outcome = 'released'")
        self.r["rolling"] = {
            "sent": len(ids),
            "lost": len(ids - finished),
            "duplicates": sum(1 for t in ids if starts.get(t, 0) > 1),
            "per_second": per_second,
            "worst": min(per_second) if per_second else 0,
            "rate": a.deploy_rate,
            "drain_seconds": drains,
            "released": released,
            "flags": " ".join(flags),
        }
        r = self.r["rolling"]
        console.print(
            f"  sent {r['sent']}, lost {r['lost']}, duplicates {r['duplicates']}, "
            f"worst second {r['worst']}/s at {a.deploy_rate}/s, released {released}, "
            f"drains took {', '.join(f'{x:.1f} s' for x in drains)}"
        )

    # -- scale-out ------------------------------------------------------------------------

    def scale_out(self) -> None:
        from bench import scale_out

        a = self.args
        ns = argparse.Namespace(
            kind="io",
            concurrency=16,
            ms=20.0,
            seconds=8.0,
            warmup=1.5,
            window=a.scale_window,
            repeats=a.scale_repeats,
            analyze=True,
        )
        console.print(f"io_task sleeping 20 ms, concurrency 16 per process, window {ns.window:g} s")
        results: dict[int, list[float]] = {}
        for _ in range(a.scale_repeats):
            for n in (1, 2, 4):
                results.setdefault(n, []).append(scale_out.one_run(self.dsn, self.db, n, ns))
        self.db.execute(f"DROP SCHEMA IF EXISTS {scale_out.SCHEMA} CASCADE")
        self.r["scale"] = results

    # -- memory + connections -------------------------------------------------------------

    def footprint(self) -> None:
        import psutil

        self.reset()
        env = h.tenure_env(self.dsn, SCHEMA)
        self.send_many(5_000)
        with h.fleet("tenure-footprint") as fleet:
            proc = fleet.start(h.tenure_worker_cmd(self.flags(concurrency=50)), env)
            self.wait_active(1, fleet)
            deadline = time.monotonic() + 60
            while (
                self.count(f"SELECT count(*) FROM {SCHEMA}.tasks") and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            time.sleep(1.0)
            rss = psutil.Process(proc.pid).memory_info().rss
            conns = self.count(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                [f"tenure-%-{proc.pid}"],
            )
        self.r["footprint"] = {"rss_mb": rss / 2**20, "connections": conns}
        console.print(
            f"  worker --concurrency 50 after 5,000 tasks: RSS {rss / 2**20:.1f} MB, "
            f"{conns} connections (application_name tenure-*-{proc.pid})"
        )

    @property
    def peers(self) -> list[str]:
        return [p for p in self.args.peers.split(",") if p]


def fixed(a: argparse.Namespace, name: str) -> int:
    """The backlog a flag fixes for this system, or 0 when it is sized by its rate."""
    if name == "floor":
        return int(a.floor_backlog)
    return int(a.backlog if name.startswith(("tenure", "pgqueuer")) else a.slow_backlog)


def sized(a: argparse.Namespace, rate: float) -> int:
    """1.25 × ``--drain-seconds`` of work at ``rate``, in thousands, within the bounds."""
    want = int(1.25 * a.drain_seconds * rate)
    return max(a.min_backlog, min(a.max_backlog, -(-want // 1000) * 1000))


def whole_from_db(d: h.Drain, db: psycopg.Connection[Any], query: str, clock: str) -> None:
    """Replace the sampled whole-backlog rate with the database's own first start and
    last finish (``query`` returns those two timestamps)."""
    row = db.execute(query).fetchone()
    if row and row[0] is not None and row[1] is not None and row[1] > row[0]:
        d.whole_seconds = (row[1] - row[0]).total_seconds()
        d.whole = d.backlog / d.whole_seconds
        d.whole_clock = clock


def ms(x: float) -> str:
    return "∞" if x == float("inf") else f"{x * 1e3:.1f} ms"


def stream_line(res: dict[str, Any]) -> str:
    if "error" in res:
        return f"harness error: {res['error']}"
    s, p = res["sender"], res["pickup"]
    behind = " [SENDER BEHIND]" if s["rate"] < 0.95 * s["target"] else ""
    return (
        f"sent {s['rate']:,.0f}/s of {s['target']:,.0f}/s{behind} "
        f"({s['missed_ticks']} ticks missed); "
        f"pickup p50 {ms(p['p50'])}, p99 {ms(p['p99'])}, p99.9 {ms(p['p999'])} over "
        f"{p['n']:,}; stalled seconds {len(res['stalled_seconds'])}; "
        f"{res['unfinished']:,} unfinished{worst_seconds(res)}"
    )


def worst_seconds(res: dict[str, Any], n: int = 3) -> str:
    """The seconds of a stream whose pickup p99 was worst, when any was over 25 ms."""
    per = [(v, k) for k, v in enumerate(res.get("pickup_p99_per_second", [])) if v == v]
    worst = sorted(per, reverse=True)[:n]
    if not worst or worst[0][0] <= 0.025:
        return ""
    return "; worst seconds " + ", ".join(f"{k} s: p99 {ms(v)}" for v, k in worst)


def spike_line(res: dict[str, Any]) -> str:
    if "error" in res:
        return f"harness error: {res['error']}"
    sp = res["spike"]
    if not sp["drained"]:
        return (
            f"not drained: {sp['spike_finished']:,} of {sp['n']:,} finished; "
            f"stalled seconds {len(res['stalled_seconds'])}"
        )
    return (
        f"{sp['n']:,} drained in {sp['drain_seconds']:.1f} s at {sp.get('drain_rate', 0):,.0f}/s "
        f"({sp.get('drain_rate', 0) / res['rate2']:.0%} of its drain rate; after the "
        f"{sp['send_seconds']:.1f} s of sends {sp.get('queued_rate', 0):,.0f}/s, "
        f"{sp.get('queued_rate', 0) / res['rate2']:.0%}); pre-spike p99 "
        f"{ms(sp['pre_p99'])}, back under {ms(sp['threshold'])} "
        + (
            "not within the stream"
            if sp["recovered_after"] != sp["recovered_after"]
            else f"after {sp['recovered_after']:.1f} s"
        )
        + f"; stalled seconds {len(res['stalled_seconds'])}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=20.0,
        help="size each drain backlog to at least this much of the system's own work (20 s)",
    )
    p.add_argument("--probe-backlog", type=int, default=50_000, help="probe drain (50,000)")
    p.add_argument(
        "--slow-probe-backlog",
        type=int,
        default=3_000,
        help="probe drain for Procrastinate and Celery (3,000)",
    )
    p.add_argument("--min-backlog", type=int, default=5_000, help="smallest sized backlog")
    p.add_argument("--max-backlog", type=int, default=3_000_000, help="largest sized backlog")
    p.add_argument("--backlog", type=int, default=0, help="fix tenure's and PgQueuer's backlog")
    p.add_argument(
        "--slow-backlog", type=int, default=0, help="fix Procrastinate's and Celery's backlog"
    )
    p.add_argument("--floor-backlog", type=int, default=0, help="fix the floor's backlog")
    p.add_argument("--single", type=int, default=2_000, help="one-by-one sends timed (2,000)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=100,
        help="slots per worker process, every system (100: the floor claims batches of 100)",
    )
    p.add_argument("--repeats", type=int, default=3, help="drain runs per system (3)")
    p.add_argument("--warmup", type=float, default=1.0, help="s after the first finish (1)")
    p.add_argument("--max-window", type=float, default=10.0, help="longest drain window (10 s)")
    p.add_argument("--probes", type=int, default=200, help="latency probes per case (200)")
    p.add_argument(
        "--load-rate",
        type=float,
        default=0.0,
        help="tasks/s of the loaded latency case (half what 2 processes sustain with sends)",
    )
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs in the takeover phase (20)")
    p.add_argument("--takeover-lease", default="5s", help="lease in the takeover phase (5s)")
    p.add_argument("--deploy-rate", type=int, default=200, help="rolling stream tasks/s (200)")
    p.add_argument("--deploy-seconds", type=float, default=30.0, help="rolling stream (30 s)")
    p.add_argument("--scale-window", type=float, default=5.0, help="scale-out window (5 s)")
    p.add_argument("--scale-repeats", type=int, default=1, help="scale-out runs per N (1)")
    p.add_argument(
        "--levels", default="10,25,50,75", help="stream rates, %% of 2-proc drain (10,25,50,75)"
    )
    p.add_argument("--stream-seconds", type=float, default=60.0, help="each stream (60 s)")
    p.add_argument(
        "--stream-tick",
        type=float,
        default=0.01,
        help="seconds between a stream's batches (0.01; see bench/streams.py)",
    )
    p.add_argument("--settle", type=float, default=30.0, help="longest wait to empty (30 s)")
    p.add_argument("--spike", type=int, default=100_000, help="spike tasks (100,000)")
    p.add_argument(
        "--spike-cap",
        type=float,
        default=30.0,
        help="a spike is at most this many seconds of the system's own drain (30)",
    )
    p.add_argument("--spike-before", type=float, default=20.0, help="stream before spike (20 s)")
    p.add_argument("--spike-after", type=float, default=30.0, help="stream after, at least (30)")
    p.add_argument("--netem-flags", default="", help="flags for bench/netem.py (its --help)")
    p.add_argument("--parsing-flags", default="", help="flags for bench/parsing.py (its --help)")
    p.add_argument(
        "--peers",
        default="pgqueuer,pgqueuer10,procrastinate,celery",
        help="peers to run (pgqueuer10: PgQueuer at its default batch size of 10)",
    )
    p.add_argument(
        "--phases",
        default="drain,streams,spike,latency,takeover,rolling,scale,footprint,netem,parsing",
        help="phases to run (all): drain,streams,spike,latency,takeover,rolling,scale,"
        "footprint,netem,parsing",
    )
    args = p.parse_args()
    signal.signal(signal.SIGTERM, h.on_sigterm)
    phases = set(args.phases.split(","))
    console.print(f"load average at start: {h.load()} (2-core box shared with other runs: noisy)")
    console.print("sizes: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))
    t0 = time.monotonic()
    try:
        dsn, which = h.pick_dsn()
        if "celery" in args.peers and not h.redis_up():
            console.print("[yellow]no Redis at 127.0.0.1:6379: Celery skipped[/]")
            args.peers = ",".join(x for x in args.peers.split(",") if x != "celery")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as db:
            bench = Bench(args, dsn, db)
            bench.r["meta"] = {
                "database": f"{which}, PostgreSQL {h.server_version(db)}",
                "args": vars(args),
                "revision": report.revision(),
                "worker_flags": " ".join(bench.tenure_drain_flags()),
                "start_load": h.load(),
            }
            console.print(f"database: {bench.r['meta']['database']}")
            for name in bench.peers:
                info = h.adapter_json(name, "info", "--concurrency", str(args.concurrency))
                bench.r["peers"][name] = info
                console.print(f"  {info['peer']} {info['version']}: {info['worker']}")
                console.print(f"    recovery default: {info['recovery']}")
            console.print(f"tenure workers: {bench.r['meta']['worker_flags']}, async no-op task")
            steps = [
                ("drain", bench.drains, None),
                ("streams", bench.streams, None),
                ("spike", bench.spike, "spike on a 25 % stream"),
                ("latency", bench.latency, None),
                ("takeover", bench.takeover, "takeover"),
                ("rolling", bench.rolling, "rolling deploy"),
                ("scale", bench.scale_out, "scale-out"),
                ("footprint", bench.footprint, "memory and connections"),
                ("netem", bench.netem, "network: workers behind a delayed link"),
                ("parsing", bench.parsing, "CPU-bound parsing vs Celery prefork"),
            ]
            for key, fn, title in steps:
                if key not in phases:
                    continue
                if title is None:
                    fn()
                else:
                    with h.phase(title, bench.r["loads"]):
                        fn()
            db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        bench.r["meta"]["end_load"] = h.load()
        bench.r["meta"]["seconds"] = time.monotonic() - t0
        # Every figure, so the report can be written again: python -c "import pickle;
        # from bench import report; report.write(pickle.load(open(PATH, 'rb')))"
        with (bench.logdir / "latest.pickle").open("wb") as f:
            pickle.dump(bench.r, f)
        report.write(bench.r)
    except (h.HarnessError, psycopg.Error) as exc:
        console.print(f"[red]harness failure:[/] {str(exc).strip().splitlines()[0]}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; workers stopped[/]")
        return 130
    finally:
        console.print(f"load average at end: {h.load()}; {time.monotonic() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
