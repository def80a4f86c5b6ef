"""Failovers of the PostgreSQL primary under a steady stream, with a real HA manager.

    python -m chaos.failover [--kinds switchover,crash,cut] [--rounds 1] [--async]
                             [--workers 2] [--rate 40] [--lease 5] [--skew S]
                             [--via hosts|haproxy|pgbouncer]

1. ``chaos.ha`` starts etcd and three Patroni nodes (one synchronous standby unless
   ``--async``); this code migrates a fresh schema on the primary, and ``--workers``
   workers and a sender (``--rate`` tasks/s of ``chaos.app``'s work task) run on a
   DSN naming all three nodes.
2. Each round takes the primary away once in each of ``--kinds``, in this order:
   ``switchover`` (a planned switchover), ``crash`` (its Patroni and postmaster
   killed with SIGKILL), ``cut`` (its namespace's link down). For each it measures,
   on this machine's clock (every node's, less its ``--skew``):
   - the HA manager's failover: from the fault until a new primary accepts writes
     (Patroni's ``/primary`` answers);
   - the first claim on the new primary after that (``started_at`` on the new
     primary), and so what tenure adds to the HA manager's time;
   - every worker's first heartbeat on the new primary after it (how long a worker
     stays with the old server: a demoted or vanished one).
   The old primary is then brought back as a standby and the cluster left healthy.
   What Patroni 3.0 (Debian 12's) did not do by itself is done as an operator would
   and counted in the report: a manual failover when no standby took over within
   three TTLs, a standby copied afresh when its old primary's data would not rejoin.
3. The stream stops, the queue drains, every worker stops with SIGTERM, and
   ``chaos.checker`` judges what the new primary recorded.

With synchronous replication every invariant must hold (lost 0 among acknowledged
sends, no overlapping leases, no stale outcome, no unexplained extra run). With
``--async`` the last commits before a failover may be gone: tasks acknowledged and
lost are counted and listed as such, and corruption (overlapping leases, stale or
misattributed outcomes) must still be 0. The exit status is 1 when an invariant
fails. ``make chaos-failover`` runs 20 rounds; ``tests/test_failover.py`` one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from chaos import checker, ha
from chaos.app import EFFECTS_DDL
from chaos.failover_watch import StandbyWatch, first_claim, workers_back
from chaos.pgbouncer import PgBouncer
from chaos.upgrade import (
    Fleet,
    Sender,
    drain_and_check,
    start_sender,
    stop_sender,
    this_release,
)
from tenure._db import connect as dbconnect
from tenure._db.migrate import migrate

# A switchover's old primary rejoins at once; a cut one is the slowest to (last in a round)
KINDS = ("switchover", "crash", "cut")
VIAS = ("hosts", "haproxy", "pgbouncer")
WHERE = {
    "hosts": " on a DSN of every node",
    "haproxy": " through HAProxy",
    "pgbouncer": " through PgBouncer (transaction mode) in front of HAProxy",
}
# tenure's part of a failover: from the new primary accepting writes to the first claim
ADDED_TARGET_S = 2.0


@dataclass
class Failover:
    kind: str
    old: str
    new: str
    fault_at: float  # time.time() of the fault
    ha_seconds: float  # fault -> new primary accepts writes
    first_claim_seconds: float | None  # new primary accepting writes -> first claim on it
    workers_back_seconds: list[float]  # ... -> each worker's first heartbeat on it
    note: str = ""


@dataclass
class Result:
    synchronous: bool
    via: str
    rebuilt: list[str]
    forced: list[str]
    skew: float
    failovers: list[Failover]
    report: checker.Report
    sent: int
    refused_batches: int
    refused_tasks: int
    refusals: list[str]
    acknowledged_lost: list[int]  # the payload numbers of sends acknowledged and gone
    ids_given_twice: int  # ids acknowledged for two different sends
    worker_failover_lines: int
    standby: StandbyWatch  # tenure sessions seen on a node in recovery
    heartbeat_seconds: float  # the workers' heartbeat interval
    exits: list[tuple[str, int | None]]
    problems: list[str]
    seconds: float
    logs: Path

    def violations(self) -> list[str]:
        found = list(self.problems)
        rep = self.report
        corruption = ("overlapping_leases", "stale_outcomes", "misattributed_attempts")
        for name in corruption:
            if getattr(rep, name):
                found.append(f"{name}={getattr(rep, name)}")
        if self.synchronous:
            found += [v for v in rep.violations() if not v.startswith(corruption)]
            if self.acknowledged_lost:
                found.append(f"acknowledged sends lost={len(self.acknowledged_lost)}")
            if self.ids_given_twice:
                found.append(f"task ids given twice={self.ids_given_twice}")
        if self.standby.longest > self.heartbeat_seconds:
            found.append(
                f"a session stayed on a standby {self.standby.longest:.2f} s, longer than "
                f"a heartbeat ({self.heartbeat_seconds:.2f} s)"
            )
        for f in self.failovers:
            if f.first_claim_seconds is None:
                found.append(f"{f.kind} {f.old}->{f.new}: no claim on the new primary")
        bad = [code for _, code in self.exits if code != 0]
        if bad:
            found.append(f"workers that did not exit 0 when stopped: {len(bad)}")
        return found

    @property
    def ok(self) -> bool:
        return not self.violations()

    def summary(self) -> str:
        mode = "synchronous" if self.synchronous else "asynchronous"
        skew = f", clocks ±{self.skew:g} s apart" if self.skew else ""
        via = WHERE[self.via]
        lines = [
            f"failovers with {mode} replication{skew}{via}: {len(self.failovers)} in "
            f"{self.seconds:.0f} s; "
            f"{self.sent:,} tasks acknowledged, {self.report.finished:,} finished; "
            f"{self.refused_batches} batches ({self.refused_tasks} tasks) refused during "
            f"failovers" + (f" (first: {self.refusals[0]})" if self.refusals else "")
        ]
        for kind in KINDS:
            rows = [f for f in self.failovers if f.kind == kind]
            if not rows:
                continue
            ha_s = [f.ha_seconds for f in rows]
            added = [f.first_claim_seconds for f in rows if f.first_claim_seconds is not None]
            back = [s for f in rows for s in f.workers_back_seconds]
            lines.append(
                f"  {kind:10} n={len(rows):2}  HA manager p50/p99 {_p(ha_s, 50):5.2f}/"
                f"{_p(ha_s, 99):5.2f} s  first claim after p50/p99 {_p(added, 50):4.2f}/"
                f"{_p(added, 99):4.2f} s (target ≤ {ADDED_TARGET_S:g})  workers on the new "
                f"primary after p50/max {_p(back, 50):4.2f}/{max(back, default=0):4.2f} s"
            )
        rep = self.report
        lines.append(
            f"  acknowledged sends lost {len(self.acknowledged_lost)}, their ids given to "
            f"another send {self.ids_given_twice}, tasks lost {rep.lost}, "
            f"overlapping leases {rep.overlapping_leases}, stale outcomes {rep.stale_outcomes}, "
            f"misattributed {rep.misattributed_attempts}, unexplained extra runs "
            f"{rep.unexplained_extra_runs}, attempts ended by lease expiry "
            f"{rep.lease_expired_attempts}; database_failover lines in worker logs: "
            f"{self.worker_failover_lines}"
        )
        lines.append(
            f"  {self.standby.summary()} (target: none open a heartbeat, "
            f"{self.heartbeat_seconds:.2f} s)"
        )
        found = self.violations()
        if self.forced:
            lines.append(
                f"  failovers Patroni did not make by itself, made by hand (/failover): "
                f"{len(self.forced)}"
            )
        if self.rebuilt:
            lines.append(
                f"  old primaries Patroni did not bring back by itself, copied afresh "
                f"(stopped, data deleted, restarted): {len(self.rebuilt)}"
            )
        lines.append(("  FAIL: " + "; ".join(found)) if found else "  every invariant held")
        lines.append(f"  logs in {self.logs}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "synchronous": self.synchronous,
            "skew": self.skew,
            "via": self.via,
            "rebuilt": self.rebuilt,
            "forced": self.forced,
            "failovers": [asdict(f) for f in self.failovers],
            "report": self.report.to_json(),
            "sent": self.sent,
            "refused_batches": self.refused_batches,
            "refused_tasks": self.refused_tasks,
            "acknowledged_lost": self.acknowledged_lost,
            "ids_given_twice": self.ids_given_twice,
            "standby_sessions": len(self.standby.seen),
            "standby_longest_seconds": self.standby.longest,
            "heartbeat_seconds": self.heartbeat_seconds,
            "violations": self.violations(),
            "seconds": self.seconds,
        }


def _p(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


def _host_port(dsn: str) -> str:
    parts = conninfo_to_dict(dsn)
    return f"{parts['host']}:{parts['port']}"


def _connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, **dbconnect.session_target(dsn))


def run(
    *,
    kinds: tuple[str, ...] = KINDS,
    rounds: int = 1,
    synchronous: bool = True,
    workers: int = 2,
    rate: float = 40.0,
    lease: float = 5.0,
    settle_seconds: float = 3.0,
    logs: Path | None = None,
    inspect: Callable[[ha.Cluster, str], None] | None = None,
    skew: float = 0.0,
    via: str = "hosts",
    first_node: int = ha.FIRST_NODE,
) -> Result:
    """The campaign; ``inspect(cluster, schema)``, if given, runs after the last
    failover while the fleet and the stream still run."""
    t0 = time.monotonic()
    logs = logs or Path(tempfile.mkdtemp(prefix="tenure-failover-"))
    logs.mkdir(parents=True, exist_ok=True)
    # the nodes' directories, which the postgres user must reach: not under `logs`
    cluster = ha.Cluster(
        Path(tempfile.mkdtemp(prefix="tenure-ha-")),
        synchronous=synchronous,
        skew=skew,
        first=first_node,
    )
    cluster.start()
    watch = StandbyWatch(cluster.nodes).start()
    schema = f"failover_{os.getpid()}"
    problems: list[str] = []
    failovers: list[Failover] = []
    sender: Sender | None = None
    fleet: Fleet | None = None
    bouncer: PgBouncer | None = None
    pooled = os.environ.get(dbconnect.ENV_POOLER)
    try:
        dsn = cluster.start_haproxy() if via != "hosts" else cluster.dsn()
        with _connect(dsn) as conn:
            migrate(conn, schema)
            conn.execute(
                sql.SQL(EFFECTS_DDL.replace("{schema}", "{s}")).format(s=sql.Identifier(schema))
            )
        args = ["--lease", f"{lease:g}s", "--drain-timeout", "5s", "--concurrency", "8"]
        args += ["--log-level", "info"]
        fleet_dsn = dsn
        if via == "pgbouncer":
            # the fleet and the sender through the pooler, keeping no session state;
            # this campaign's own reads go to HAProxy (to the primary) directly
            bouncer = PgBouncer(f"postgresql://postgres@{_host_port(dsn)}/postgres")
            fleet_dsn = bouncer.dsn
            os.environ[dbconnect.ENV_POOLER] = "transaction"
            args += ["--poll-only", "--poll-interval", "200ms"]
        fleet = Fleet(fleet_dsn, schema, logs, args)
        here = this_release()
        for _ in range(workers):
            fleet.start(here)
        sender = start_sender(here, fleet_dsn, schema, rate, logs)
        time.sleep(settle_seconds)
        try:
            for _ in range(rounds):
                for kind in kinds:
                    failovers.append(_one(cluster, kind, schema, lease))
                    f = failovers[-1]
                    print(
                        f"{len(failovers):3} {kind:10} {f.old}->{f.new} HA "
                        f"{f.ha_seconds:5.2f} s, first claim after {f.first_claim_seconds} s, "
                        f"workers back after {f.workers_back_seconds}",
                        file=sys.stderr,
                        flush=True,
                    )
                    fleet.check_alive()
                    time.sleep(settle_seconds)
        except RuntimeError as exc:  # the cluster would not come back: judge what ran
            problems.append(f"the cluster stopped the campaign after {len(failovers)}: {exc}")
            cluster.wait_healthy()  # a primary for the drain, if there is one
        if inspect is not None:
            inspect(cluster, schema)
        sent = stop_sender(sender, problems, refusals_expected=True)
        numbers = dict(zip(sender.numbers, sent, strict=True))  # payload n -> id
        refused = (len(sender.refused), sender.refused_tasks, sender.refused[:3])
        sender = None
        with _connect(dsn) as conn:
            report = drain_and_check(fleet, conn, schema, sent, timeout=120)
            present = sql.SQL(
                "SELECT id, (payload->>'n')::int FROM {s}.tasks UNION ALL "
                "SELECT id, (payload->>'n')::int FROM {s}.finished_tasks"
            ).format(s=sql.Identifier(schema))
            stored = set(conn.execute(present).fetchall())  # (id, n) of every task kept
        lines = sum(
            w.read_text(errors="replace").count("database_failover")
            for w in logs.glob("worker-*.log")
        )
    finally:
        if sender is not None:
            sender.proc.kill()
        if fleet is not None:
            fleet.kill_all()
        if bouncer is not None:
            bouncer.stop()
        if pooled is None:
            os.environ.pop(dbconnect.ENV_POOLER, None)
        watch.stop()
        cluster.close(keep_files=True)
    result = Result(
        synchronous=synchronous,
        via=via,
        rebuilt=list(cluster.rebuilt),
        forced=list(cluster.forced),
        skew=skew,
        failovers=failovers,
        report=report,
        sent=len(sent),
        refused_batches=refused[0],
        refused_tasks=refused[1],
        refusals=list(refused[2]),
        # a send acknowledged is kept only if its id holds its own payload: after an
        # asynchronous failover the new primary may give a lost task's id to another
        acknowledged_lost=sorted(n for n, i in numbers.items() if (i, n) not in stored),
        ids_given_twice=len(sent) - len(set(sent)),
        worker_failover_lines=lines,
        standby=watch,
        heartbeat_seconds=lease / 3,
        exits=fleet.exits,
        problems=problems + fleet.problems,
        seconds=time.monotonic() - t0,
        logs=logs,
    )
    if result.ok:
        shutil.rmtree(cluster.root, ignore_errors=True)
    else:
        result.problems.append(f"the nodes' logs and data are in {cluster.root}")
    return result


def _one(cluster: ha.Cluster, kind: str, schema: str, lease: float) -> Failover:
    """Take the primary away by ``kind``, measure, and bring it back as a standby."""
    old = cluster.wait_healthy()
    fault_at = time.time()
    if kind == "crash":
        cluster.crash(old)
    elif kind == "cut":
        cluster.cut(old)
    elif kind == "switchover":
        cluster.switchover(old)
    else:
        raise ValueError(f"unknown failover kind {kind!r}; choose from {', '.join(KINDS)}")
    new, promoted_at = cluster.wait_new_primary(old)
    where = new.dsn
    shift = new.clock_offset  # its database clock reads this much more than ours
    claim = first_claim(where, schema, promoted_at + shift, timeout=30)
    back = workers_back(where, schema, promoted_at + shift, timeout=3 * lease)
    cluster.heal(old)
    return Failover(
        kind,
        old.name,
        new.name,
        fault_at,
        ha_seconds=promoted_at - fault_at,
        first_claim_seconds=None if claim is None else claim - shift - promoted_at,
        workers_back_seconds=[round(b, 3) for b in back],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.failover", description=__doc__)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--async", dest="asynchronous", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument(
        "--skew",
        type=float,
        default=0.0,
        help="run node2's clock this many seconds ahead and node3's as far behind",
    )
    parser.add_argument(
        "--via",
        choices=VIAS,
        default="hosts",
        help="how the fleet reaches the primary: a DSN of every node, a HAProxy on "
        "Patroni's REST API, or a PgBouncer in transaction mode in front of that HAProxy",
    )
    parser.add_argument(
        "--first-node",
        type=int,
        default=ha.FIRST_NODE,
        help="the nodes' network namespace numbers start here (two campaigns at once "
        "need ranges apart)",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    opts = parser.parse_args(argv)
    kinds = tuple(k for k in opts.kinds.split(",") if k)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        parser.error(f"--kinds: choose from {', '.join(KINDS)} (got {opts.kinds!r})")
    if opts.rounds < 1:
        parser.error("--rounds: at least 1")
    reason = ha.available()
    if reason is not None:
        print(f"chaos.failover cannot run here: {reason}", file=sys.stderr)
        return 2
    result = run(
        kinds=kinds,
        rounds=opts.rounds,
        synchronous=not opts.asynchronous,
        workers=opts.workers,
        rate=opts.rate,
        lease=opts.lease,
        skew=opts.skew,
        via=opts.via,
        first_node=opts.first_node,
    )
    print(result.summary())
    if opts.json:
        opts.json.write_text(json.dumps(result.to_json(), indent=1, default=str))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
