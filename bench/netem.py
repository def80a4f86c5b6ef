"""A database across a network: tenure and its peers with workers behind ``tc netem``.

What it measures, for tenure and each peer (PgQueuer at batch 100 and at its default
10, Procrastinate, Celery+Redis): the drain rate of 2 worker processes, and the idle
pickup latency of a probe task, at each round-trip delay of ``--delays`` (0, 1 and
5 ms by default). Tenure's ratio to each peer and tenure's drain at the largest
delay as a fraction of its 0 ms drain (target: at least 50 %) close the report.

The network, made by this module and removed on every exit path:

- one network namespace ``tnnetem<N>`` holding the workers, joined to the host by the
  veth pair ``tnm<N>h`` (host end, 10.214.N.1/30) and ``tnm<N>n`` (inside,
  10.214.N.2/30). Only those two addresses and 127.0.0.1 are ever used.
- two forwarders (``bench/netlink.py``'s ``_forward`` command, one process each) on the host
  end of the veth, listening on 10.214.N.1 and connecting to PostgreSQL at
  127.0.0.1:5432 and to Redis at 127.0.0.1:6379; the workers in the namespace connect
  to 10.214.N.1. Both sides set TCP_NODELAY.
- the delay, half the round trip each way (1 ms RTT = 0.5 ms host→namespace + 0.5 ms
  namespace→host): a ``tc netem`` root qdisc on *both* ends of the veth, each
  delaying its egress by half, where the kernel has sch_netem. A kernel without it
  (CONFIG_NET_SCH_NETEM unset, as on the machine this was written on) gets the same
  delay from the forwarder instead: every chunk it reads, in either direction, is
  written to the other side half the RTT later, order kept — netem's fixed delay, at
  the level of the TCP stream (the workers' TCP peer is then the forwarder, 0 ms
  away, so TCP's own acks are not delayed; at these message sizes no window fills).
  The forwarder's timers wait in select() (microseconds) with a 1 ns timer slack.
  Before each case the round trip of ``SELECT 1`` from inside the namespace is
  measured and printed (``meta.statement_rtt_ms``): what a worker's statement pays.
- the 0 ms baseline runs through the same veth and forwarders with no delay, so the
  only difference between the cases is the delay. ``--no-loopback`` skips tenure's
  extra reference drain straight on 127.0.0.1 (no namespace, no forwarder).

Enqueueing, counting and probe sending run on the host over loopback, undelayed: only
the workers' traffic crosses the delayed link.

Drain: the backlog is sized to ``--work-seconds`` (20) of work at the rate expected
for that delay (a fixed guess at 0 ms, then the rate measured at the next smaller
delay), or ``--backlog`` for every system; it is enqueued before the 2 workers start.
Finished tasks are counted every 0.5 s (``bench.harness.sample_drain``); the window
starts ``--warmup`` s after the first finish and lasts at most ``--window`` s, so the
backlog never runs dry inside it.

Pickup latency, idle fleet of 2 workers: ``--probes`` tasks sent one at a time,
``--gap`` s apart. From the database clock: tenure ``attempts.started_at −
finished_tasks.created_at``; PgQueuer ``picked − queued`` in ``pgqueuer_log``;
Procrastinate ``started − deferred`` in ``procrastinate_events``. Celery has no
database: its probe carries the sender's ``time.time()`` and records its own at start
(one kernel clock, the namespace shares it).

``python bench/netem.py`` runs it; ``run_netem()`` returns the same results as a dict.
The 2-core machine may be shared: absolute figures are indicative, ratios come from
the same run. Needs root (namespaces, qdiscs) and iproute2.

The namespace, the forwarders and the peers' probe senders (run by the peers' own
Pythons) are in ``bench/netlink.py``, which imports only the standard library.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness as h  # noqa: E402
from bench import netlink  # noqa: E402
from bench.netlink import PG_PORT, REDIS_PORT, Link  # noqa: E402

SCHEMA = "bench_netem"
SYSTEMS = ("tenure", "pgqueuer", "pgqueuer10", "procrastinate", "celery")
LABELS = {
    "tenure": "tenure",
    "pgqueuer": "PgQueuer (batch 100)",
    "pgqueuer10": "PgQueuer (batch 10, its default)",
    "procrastinate": "Procrastinate",
    "celery": "Celery+Redis",
}
# Drain rates (tasks/s, 2 processes, loopback) from bench/results/latest.md, with a
# margin: the 0 ms backlog is sized from these.
GUESS = {
    "tenure": 50_000,
    "pgqueuer": 25_000,
    "pgqueuer10": 8_000,
    "procrastinate": 1_000,
    "celery": 3_000,
}


# -- the bench (tenure's environment) --------------------------------------------------------


class NetBench:
    def __init__(self, link: Link, args: argparse.Namespace) -> None:
        import psycopg

        self.link = link
        self.args = args
        self.dsn = h.SYSTEM_DSN
        self.db = psycopg.connect(self.dsn, autocommit=True)
        os.environ.setdefault("TENURE_BENCH_SCHEMA", SCHEMA)
        os.environ["TENURE_DATABASE_URL"] = self.dsn
        from bench import bench_tasks

        self.t = bench_tasks
        self.schema = bench_tasks.reg.schema  # bench_netem, unless imported before

    def close(self) -> None:
        self.db.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.t.reg.client.close()
        self.db.close()

    def count(self, sql: str, params: Any = None) -> int:
        return h.scalar(self.db, sql, params)

    def reset(self) -> None:
        self.db.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.t.reg.client.close()

    def tenure_cmd(self, direct: bool = False) -> list[str]:
        flags = ["--concurrency", str(self.args.concurrency), "--lease", "30s"]
        cmd = h.tenure_worker_cmd(flags)
        return cmd if direct else self.link.command(cmd)

    def tenure_env(self, direct: bool = False) -> dict[str, str]:
        return h.tenure_env(self.dsn if direct else self.link.pg_dsn(), self.schema)

    def peer_cmd(self, name: str, dsn: str, *extra: str) -> list[str]:
        return self.link.command(h.adapter(name, "worker", dsn, *extra))

    def ns_url(self, dbname: str) -> str:
        """A peer's database as its workers in the namespace reach it."""
        return self.link.pg_dsn(dbname)

    def wait_backends(self, dbname: str, n: int, fleet: Any, timeout: float = 60.0) -> None:
        """Wait until ``n`` connections from the namespace reach ``dbname`` (through the
        forwarder they come from 127.0.0.1), then a second for the workers to settle."""
        deadline = time.monotonic() + timeout
        q = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        while self.count(q, [dbname]) < n:
            fleet.check_alive()
            if time.monotonic() > deadline:
                raise h.HarnessError(f"{n} connections to {dbname} not up in {timeout:.0f} s")
            time.sleep(0.1)
        time.sleep(1.0)

    # -- drain ----------------------------------------------------------------------------

    def drain(self, name: str, backlog: int) -> Any:
        h.checkpoint(self.db)
        if name == "tenure":
            return self._tenure_drain(backlog)
        if name == "celery":
            return self._celery_drain(backlog)
        return self._pg_peer_drain(name, backlog)

    def _sample(self, count: Any, backlog: int, fleet: Any) -> Any:
        a = self.args
        return h.sample_drain(count, backlog, fleet, warmup=a.warmup, max_seconds=a.window)

    def _tenure_drain(self, backlog: int, direct: bool = False) -> Any:
        self.reset()
        h.send_noops(self.t.noop, backlog)
        self.db.execute(f"ANALYZE {self.schema}.tasks")
        with h.fleet("netem-tenure") as fleet:
            for _ in range(2):
                fleet.start(self.tenure_cmd(direct), self.tenure_env(direct))
            return self._sample(
                lambda: self.count(f"SELECT count(*) FROM {self.schema}.finished_tasks"),
                backlog,
                fleet,
            )

    def _pg_peer_drain(self, name: str, backlog: int) -> Any:
        import psycopg

        dbname = f"bench_netem_{name}"
        with h.fresh_database(self.dsn, dbname) as host_dsn:
            h.adapter_json(name, "setup", host_dsn)
            h.adapter_json(name, "enqueue", host_dsn, str(backlog), "batch")
            with psycopg.connect(host_dsn, autocommit=True) as pdb:
                done = h.peer_done(pdb, name, backlog)
                with h.fleet(f"netem-{name}") as fleet:
                    for _ in range(2):
                        fleet.start(
                            self.peer_cmd(
                                name,
                                self.ns_url(dbname),
                                "--concurrency",
                                str(self.args.concurrency),
                            ),
                            cwd=h.ADAPTERS,
                        )
                    return self._sample(done, backlog, fleet)

    def _celery_drain(self, backlog: int) -> Any:
        url = h.REDIS_URL
        h.adapter_json("celery", "setup", url)
        try:
            h.adapter_json("celery", "enqueue", url, str(backlog), "batch")
            with h.fleet("netem-celery") as fleet:
                for _ in range(2):
                    fleet.start(self.peer_cmd("celery", self.link.redis_url()), cwd=h.ADAPTERS)
                # Messages taken off the broker's list, as make bench counts them.
                return self._sample(h.celery_done(backlog), backlog, fleet)
        finally:
            h.adapter_json("celery", "teardown", url)

    # -- idle pickup latency ----------------------------------------------------------------

    def latency(self, name: str) -> list[float]:
        if name == "tenure":
            return self._tenure_latency()
        if name == "celery":
            return self._celery_latency()
        return self._pg_peer_latency(name)

    def _tenure_latency(self) -> list[float]:
        a = self.args
        self.reset()
        self.t.probe.send({"t": 0})  # migrate outside the timing, then forget it
        self.db.execute(f"DELETE FROM {self.schema}.tasks")
        with h.fleet("netem-tenure-latency") as fleet:
            for _ in range(2):
                fleet.start(self.tenure_cmd(), self.tenure_env())
            h.wait_active(self.db, self.schema, 2, fleet)
            time.sleep(1.0)
            for _ in range(a.probes):
                self.t.probe.send({"t": time.time()})
                time.sleep(a.gap)
            q = f"SELECT count(*) FROM {self.schema}.finished_tasks"
            self._wait_count(lambda: self.count(q), a.probes, fleet)
        rows = self.db.execute(
            "SELECT extract(epoch FROM a.started_at - f.created_at)::float8 "
            f"FROM {self.schema}.finished_tasks f JOIN {self.schema}.attempts a "
            "ON a.task_id = f.id AND a.attempt = f.attempt"
        ).fetchall()
        return [float(r[0]) for r in rows]

    def _wait_count(self, count: Any, n: int, fleet: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while count() < n and time.monotonic() < deadline:
            fleet.check_alive()
            time.sleep(0.1)

    def _pg_peer_latency(self, name: str) -> list[float]:
        import psycopg

        a = self.args
        pgqueuer = name.startswith("pgqueuer")
        dbname = f"bench_netem_{name}"
        with h.fresh_database(self.dsn, dbname) as host_dsn:
            h.adapter_json(name, "setup", host_dsn)
            with psycopg.connect(host_dsn, autocommit=True) as pdb, h.fleet(f"netem-{name}") as fl:
                for _ in range(2):
                    fl.start(
                        self.peer_cmd(
                            name, self.ns_url(dbname), "--concurrency", str(a.concurrency)
                        ),
                        cwd=h.ADAPTERS,
                    )
                self.wait_backends(dbname, 2, fl)
                self._peer_probe(name, host_dsn)
                if pgqueuer:
                    done_q = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
                    lat_q = (
                        "SELECT extract(epoch FROM p.created - q.created)::float8 "
                        "FROM pgqueuer_log q JOIN pgqueuer_log p ON p.job_id = q.job_id "
                        "AND p.status = 'picked' WHERE q.status = 'queued'"
                    )
                else:
                    done_q = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                    lat_q = (
                        "SELECT extract(epoch FROM s.at - d.at)::float8 "
                        "FROM procrastinate_events d JOIN procrastinate_events s "
                        "ON s.job_id = d.job_id AND s.type = 'started' WHERE d.type = 'deferred'"
                    )
                self._wait_count(lambda: h.scalar(pdb, done_q), a.probes, fl)
                return [float(r[0]) for r in pdb.execute(lat_q).fetchall()]

    def _peer_probe(self, name: str, target: str, log: str = "") -> None:
        """Send the probes from the peer's own Python (``bench/netlink.py``'s ``_peer``
        command)."""
        base = h.PEER_VARIANTS.get(name, (name, ()))[0]
        python = str(h.peer_python(base))
        argv = [python, netlink.__file__, "_peer", "probe", base, target, str(self.args.probes)]
        argv += [str(self.args.gap), log]
        out = subprocess.run(argv, capture_output=True, cwd=h.ADAPTERS, timeout=300)
        if out.returncode != 0:
            raise h.HarnessError(f"{name} probes failed: {out.stderr.decode()[-400:]}")

    def _celery_latency(self) -> list[float]:
        a = self.args
        url = h.REDIS_URL
        log = h.ROOT / "bench" / "results" / "logs" / "netem-celery.starts"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        h.adapter_json("celery", "setup", url)
        python = str(h.peer_python("celery"))
        worker = [python, netlink.__file__, "_peer", "worker", "celery", self.link.redis_url(), "0"]
        try:
            with h.fleet("netem-celery-latency") as fleet:
                for _ in range(2):
                    fleet.start(self.link.command([*worker, "0", str(log)]), cwd=h.ADAPTERS)
                deadline = time.monotonic() + 60
                while not self._celery_ready() and time.monotonic() < deadline:
                    fleet.check_alive()
                    time.sleep(0.2)
                time.sleep(1.0)
                self._peer_probe("celery", url, str(log))

                def lines() -> int:
                    return len(log.read_text().splitlines()) if log.exists() else 0

                self._wait_count(lines, a.probes, fleet)
        finally:
            h.adapter_json("celery", "teardown", url)
        out = []
        for line in log.read_text().splitlines():
            sent, started = (float(x) for x in line.split())
            out.append(started - sent)
        return out

    def _celery_ready(self) -> bool:
        """Both workers are up once two clients of the bench's Redis database, come
        through the forwarder, block on the queue's list."""
        import socket

        host, port, dbnum = h.REDIS
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n")
            data = b""
            while b"\r\n" not in data:
                data += sock.recv(65536)
            head, _, rest = data.partition(b"\r\n")
            size = int(head[1:])
            while len(rest) < size:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        lines = rest.decode(errors="replace").splitlines()
        return sum(1 for ln in lines if f" db={dbnum} " in ln and "cmd=brpop" in ln) >= 2


# -- the run ----------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog="Needs root and iproute2 (ip, tc). Everything it makes is removed "
        "on exit, SIGTERM and Ctrl-C included.",
    )
    p.add_argument("--delays", default="0,1,5", help="round trips in ms (0,1,5); 0 first")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"({','.join(SYSTEMS)})")
    p.add_argument(
        "--work-seconds",
        type=float,
        default=20.0,
        help="size each backlog to this much work at the expected rate (20)",
    )
    p.add_argument("--backlog", type=int, default=0, help="fixed backlog for every system")
    p.add_argument("--window", type=float, default=6.0, help="longest drain window, s (6)")
    p.add_argument("--warmup", type=float, default=1.0, help="s after the first finish (1)")
    p.add_argument("--concurrency", type=int, default=100, help="slots per process (100)")
    p.add_argument("--probes", type=int, default=100, help="latency probes per case (100)")
    p.add_argument("--gap", type=float, default=0.03, help="s between probes (0.03)")
    p.add_argument("--no-latency", action="store_true", help="drain only")
    p.add_argument(
        "--no-loopback",
        action="store_true",
        help="skip tenure's reference drain straight on 127.0.0.1 (no namespace, no forwarder)",
    )
    p.add_argument("--no-drain", action="store_true", help="latency only")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def run_netem(argv: list[str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Run the network benchmark and return its results as a plain dict.

    ``argv`` takes the command-line flags (see ``--help``); keyword ``overrides`` set
    the same options by their attribute names (``delays="0,5"``, ``window=5.0``).
    Result keys: ``meta`` (sizes, load, the measured ping per delay), ``drain``
    (system -> delay ms as a string -> {rate, done, seconds, backlog}), ``latency``
    (system -> delay -> {p50_ms, p99_ms, n}), ``ratios`` (peer -> delay -> tenure's
    drain ÷ the peer's), ``tenure_keep`` (delay -> tenure's drain ÷ its 0 ms drain).
    """
    args = _parse_args(argv if argv is not None else [])
    for key, value in overrides.items():
        setattr(args, key, value)
    delays = [float(x) for x in str(args.delays).split(",") if x != ""]
    systems = [s for s in str(args.systems).split(",") if s]
    for need in ("ip", "tc"):
        if shutil.which(need) is None:
            raise RuntimeError(f"`{need}` is not installed")
    results: dict[str, Any] = {
        "meta": {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "start_load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "statement_rtt_ms": {},
        },
        "drain": {s: {} for s in systems},
        "latency": {s: {} for s in systems},
    }
    t0 = time.monotonic()
    with h.sigterm_raises():
        link = Link()
        bench: NetBench | None = None
        try:
            results["meta"]["delay_placement"] = link.placement
            bench = NetBench(link, args)
            console = h.console
            if "celery" in systems and not h.redis_up():
                console.print("[yellow]no Redis at 127.0.0.1:6379: Celery skipped[/]")
                systems = [s for s in systems if s != "celery"]
            console.print(
                f"namespace {link.name}: workers at {link.ns_addr}, forwarders on "
                f"{link.host_addr}:{PG_PORT} (PostgreSQL) and :{REDIS_PORT} (Redis)"
            )
            console.print(f"delay: {link.placement}")
            expected = dict(GUESS)
            if "tenure" in systems and not args.no_drain and not args.no_loopback:
                console.rule(f"[bold]loopback reference[/] — load {h.load()}")
                backlog = args.backlog or int(expected["tenure"] * args.work_seconds)
                h.checkpoint(bench.db)
                d = bench._tenure_drain(backlog, direct=True)
                results["loopback"] = {"rate": d.rate, "done": d.done, "seconds": d.seconds}
                console.print(
                    f"  tenure on 127.0.0.1:5432, no namespace, no forwarder: drain "
                    f"{d.rate:9.0f} tasks/s ({d.done} in {d.seconds:.1f} s)  load {h.load()}"
                )
            for delay in delays:
                link.set_rtt(delay)
                key = f"{delay:g}"
                rtt = link.statement_rtt_ms()
                results["meta"]["statement_rtt_ms"][key] = rtt
                console.rule(
                    f"[bold]RTT {delay:g} ms[/] (SELECT 1 from the namespace: "
                    f"{f'{rtt:.2f}' if rtt is not None else '?'} ms) — load {h.load()}"
                )
                for name in systems:
                    if not args.no_latency:
                        lat = bench.latency(name)
                        results["latency"][name][key] = {
                            "p50_ms": h.percentile(lat, 50) * 1e3,
                            "p99_ms": h.percentile(lat, 99) * 1e3,
                            "n": len(lat),
                        }
                        r = results["latency"][name][key]
                        console.print(
                            f"  {LABELS[name]:34} pickup p50 {r['p50_ms']:7.1f} ms  "
                            f"p99 {r['p99_ms']:7.1f} ms  ({r['n']} probes)"
                        )
                    if not args.no_drain:
                        backlog = args.backlog or int(expected[name] * args.work_seconds)
                        d = bench.drain(name, backlog)
                        expected[name] = d.rate * 1.1  # the next, longer delay is slower
                        results["drain"][name][key] = {
                            "rate": d.rate,
                            "done": d.done,
                            "seconds": d.seconds,
                            "backlog": backlog,
                        }
                        console.print(
                            f"  {LABELS[name]:34} drain {d.rate:9.0f} tasks/s "
                            f"({d.done} in {d.seconds:.1f} s of a {backlog} backlog)  "
                            f"load {h.load()}"
                        )
        finally:
            if bench is not None:
                try:
                    bench.close()
                except Exception:
                    pass
            link.remove()
    results["meta"]["seconds"] = time.monotonic() - t0
    results["meta"]["end_load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    _summarise(results, systems, delays)
    return results


def _summarise(results: dict[str, Any], systems: list[str], delays: list[float]) -> None:
    drain = results["drain"]
    tenure = drain.get("tenure", {})
    ratios: dict[str, dict[str, float]] = {}
    for peer in systems:
        if peer == "tenure":
            continue
        ratios[peer] = {
            k: tenure[k]["rate"] / v["rate"]
            for k, v in drain.get(peer, {}).items()
            if k in tenure and v["rate"] > 0
        }
    results["ratios"] = ratios
    base = tenure.get(f"{delays[0]:g}") if delays else None
    results["tenure_keep"] = (
        {k: v["rate"] / base["rate"] for k, v in tenure.items()} if base and base["rate"] else {}
    )


def print_report(results: dict[str, Any]) -> None:
    keys = list(results["meta"]["statement_rtt_ms"])
    drain, lat = results["drain"], results["latency"]
    print()
    print("drain, 2 worker processes (tasks/s), by round trip:")
    print(f"  {'system':34}" + "".join(f"{k + ' ms':>12}" for k in keys))
    for name, per in drain.items():
        if per:
            row = "".join(f"{per[k]['rate']:12.0f}" if k in per else f"{'-':>12}" for k in keys)
            print(f"  {LABELS[name]:34}{row}")
    print("tenure ÷ peer (drain):")
    for name, per in results["ratios"].items():
        if per:
            row = "".join(f"{per[k]:11.2f}×" if k in per else f"{'-':>12}" for k in keys)
            print(f"  {LABELS[name]:34}{row}")
    if any(lat.values()):
        print("idle pickup latency p50 / p99 (ms):")
        for name, per in lat.items():
            if per:
                row = "".join(
                    f"{per[k]['p50_ms']:6.1f}/{per[k]['p99_ms']:<5.1f}" if k in per else "-"
                    for k in keys
                )
                print(f"  {LABELS[name]:34}{row}")
    keep = results.get("tenure_keep") or {}
    if keep:
        last = keys[-1]
        verdict = "PASS" if keep.get(last, 0) >= 0.5 else "BELOW TARGET"
        print(
            f"tenure at {last} ms RTT keeps {keep.get(last, float('nan')):.0%} of its "
            f"{keys[0]} ms drain (target ≥ 50 %): {verdict}"
        )
    m = results["meta"]
    print(f"load average {m['start_load']} → {m['end_load']}; {m['seconds']:.0f} s in all")


def main() -> int:
    args = _parse_args()
    if os.geteuid() != 0:
        print("bench/netem.py needs root (network namespaces, tc)", file=sys.stderr)
        return 2
    return h.report_main(
        run_netem,
        print_report,
        sys.argv[1:],
        args.json,
        "interrupted; namespace, qdiscs, forwarders and workers removed",
    )


if __name__ == "__main__":
    sys.exit(main())
