"""The campaign's report: a rich table on the terminal, JSON and a PNG timeline on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from chaos.driver import Result


def table(result: Result) -> Table:
    rep = result.report
    cfg = result.config
    t = Table(title=f"tenure chaos campaign — seed {cfg.seed}", show_lines=False)
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("must be")

    def row(name: str, value: Any, want: str = "") -> None:
        t.add_row(name, str(value), want)

    row("tasks sent", rep.sent)
    row("tasks finished", f"{rep.finished} {rep.finished_by_state}")
    row("lost", rep.lost, "0")
    row("attempts (lease expired)", f"{rep.attempts} ({rep.lease_expired_attempts})")
    row("runs of task functions", rep.runs)
    row("tasks run more than once", rep.tasks_run_more_than_once)
    row("runs per task (runs: tasks)", rep.runs_per_task)
    row("extra runs / after a lost lease", f"{rep.extra_runs} / {rep.extra_runs_after_lost_lease}")
    row("extra runs not explained by a lost attempt", rep.unexplained_extra_runs, "0")
    row("same attempt run twice", rep.same_attempt_run_twice, "0")
    row("overlapping valid leases", rep.overlapping_leases, "0")
    row("stale outcomes accepted", rep.stale_outcomes, "0")
    row("attempts recorded for the wrong worker", rep.misattributed_attempts, "0")
    row(f"limit: max overlap (limit {rep.limit})", rep.limit_max_overlap, f"<= {rep.limit}")
    row("limit violations", rep.limit_violations, "0")
    row(
        "supervised children killed / not restarted",
        f"{rep.children_killed} / {rep.children_not_restarted}",
        "… / 0",
    )
    row(
        "checks during the run / violations seen",
        f"{rep.midrun_checks} / {len(rep.midrun_violations)}",
        "… / 0",
    )
    for finding in rep.midrun_violations[:5]:
        row("  seen during the run", finding)
    for label, d in (
        ("takeover, first crash", rep.takeover_first),
        ("takeover, first crash, limit full", rep.takeover_limit_full),
        ("takeover, first crash, database down", rep.takeover_db_down),
        ("takeover, all", rep.takeover_all),
    ):
        row(
            f"{label} (n={d.count}) p50/p99/max",
            f"{d.p50:.2f}s / {d.p99:.2f}s / {d.max:.2f}s",
            f"p99 <= {rep.takeover_bound:.2f}s" if label == "takeover, first crash" else "",
        )
    row("faults injected", sum(rep.faults.values()))
    for kind, n in sorted(rep.faults.items()):
        row(f"  {kind}", n)
    row("late writes fenced (lease_lost in logs)", result.fenced_writes)
    row("oldest unreaped expired lease seen", f"{result.max_stale_lease:.1f}s")
    row("database", cfg.database if cfg.database == "embedded" else f"system {cfg.cluster}")
    row("campaign time", f"{result.elapsed:.0f}s")
    verdict = "OK" if rep.ok else "VIOLATED: " + ", ".join(rep.violations())
    row("verdict", verdict)
    return t


def write(result: Result, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "seed": result.config.seed,
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(result.config).items()
            if k != "results_dir"
        },
        "elapsed_s": result.elapsed,
        "fenced_writes": result.fenced_writes,
        "max_stale_lease_s": result.max_stale_lease,
        "report": result.report.to_json(),
        "faults": [
            {
                "kind": f.kind,
                "at": f.at.isoformat(),
                "until": f.until.isoformat() if f.until else None,
                "pids": list(f.pids),
                "detail": f.detail,
            }
            for f in result.faults
        ],
        "timeline": result.timeline,
    }
    (out / "report.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    timeline_png(result, out / "timeline.png")


def timeline_png(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = result.timeline
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    kinds = sorted({f[0] for f in tl.get("faults", [])})
    colors = plt.get_cmap("tab10")
    for i, kind in enumerate(kinds):
        for k, start, end in tl["faults"]:
            if k == kind:
                ax1.axvspan(start, max(end, start + 0.2), color=colors(i), alpha=0.25, lw=0)
        ax1.plot([], [], color=colors(i), lw=6, alpha=0.4, label=kind)
    xs = [p[0] for p in tl.get("throughput", [])]
    ys = [p[1] for p in tl.get("throughput", [])]
    ax1.plot(xs, ys, color="black", lw=0.8)
    ax1.set_ylabel("tasks/s")
    ax1.legend(fontsize=6, ncol=4, loc="upper right")
    pts = tl.get("takeovers", [])
    ax2.scatter([p[0] for p in pts], [p[1] for p in pts], s=4)
    ax2.set_ylabel("lease end → next start (s)", fontsize=8)
    ax2.set_xlabel(f"seconds (seed {result.config.seed})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def show(result: Result) -> None:
    Console().print(table(result))
