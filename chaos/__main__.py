"""``python -m chaos``: a long randomized campaign; prints the report, writes chaos-results/."""

from __future__ import annotations

import argparse
import random
import signal
import sys
from pathlib import Path

from chaos.database import SYSTEM_CLUSTER, SYSTEM_DSN
from chaos.driver import KINDS, CampaignConfig, run_campaign
from chaos.report import show, write


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--seed", type=int, default=None, help="default: a random seed (printed)")
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--faults-per-kind", type=int, default=30)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--lease", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=0.0, help="tasks/s (default: fit the faults)")
    p.add_argument("--results", type=Path, default=Path("chaos-results"))
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--database",
        choices=("embedded", "system"),
        default="embedded",
        help="embedded: a private server (default); system: the cluster of --cluster, "
        "which pg_restart restarts (it is started again when the campaign ends)",
    )
    p.add_argument("--cluster", default=SYSTEM_CLUSTER, help="VERSION/NAME for pg_ctlcluster")
    p.add_argument("--dsn", default=SYSTEM_DSN, help="how to reach the system cluster")
    args = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the campaign's cleanup (a stopped server started
    # again, namespaces removed, workers killed) runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    print(
        f"chaos campaign seed={seed} (rerun with --seed {seed}) on the {args.database} server",
        flush=True,
    )
    cfg = CampaignConfig(
        seed=seed,
        tasks=args.tasks,
        faults_per_kind=args.faults_per_kind,
        kinds=tuple(k for k in args.kinds.split(",") if k),
        lease=args.lease,
        rate=args.rate,
        results_dir=args.results,
        verbose=not args.quiet,
        database=args.database,
        system_dsn=args.dsn,
        cluster=args.cluster,
    )
    result = run_campaign(cfg)
    write(result, args.results)
    show(result)
    print(f"seed={seed}; report in {args.results}/report.json and timeline.png")
    return 0 if result.report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
