"""The report of ``make bench``: one markdown table with ratios and targets, and plots.

Writes ``bench/results/latest.md``, ``bench/results/drain.png`` and
``bench/results/latency.png``, and prints the same tables. Medians everywhere a
phase ran more than once.
"""

from __future__ import annotations

import subprocess
from typing import Any

from bench.harness import ROOT, console, median, percentile

RESULTS = ROOT / "bench" / "results"
NAMES = {
    "tenure": "tenure",
    "pgqueuer": "PgQueuer (batch 100)",
    "pgqueuer10": "PgQueuer (batch 10, its default)",
    "procrastinate": "Procrastinate",
    "celery": "Celery+Redis",
    "floor": "SQL floor",
}


def revision() -> str:
    """The git commit benchmarked, marked dirty when src/ has uncommitted changes."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True)
    return head.stdout.decode().strip() + (" + uncommitted src/ changes" if dirty.stdout else "")


def _fmt(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b or a != a or b != b else f"{a / b:.2f}×"


def _check(ok: bool | None) -> str:
    return "–" if ok is None else ("PASS" if ok else "**FAIL**")


def tables(r: dict[str, Any]) -> list[str]:
    drain = {k: {p: median([d.rate for d in v[p]]) for p in (1, 2)} for k, v in r["drain"].items()}
    enq = {
        k: {s: median(v.get(s, [])) for s in ("single", "batch")} for k, v in r["enqueue"].items()
    }
    t1, t2 = drain.get("tenure", {}).get(1), drain.get("tenure", {}).get(2)
    out = ["## Throughput (median tasks/s) and tenure's ratio to each", ""]
    out.append(
        "| system | drain 1 proc | drain 2 procs | tenure ÷ it (1 / 2 procs) "
        "| send one by one | send_many / batch | tenure ÷ it (one / batch) |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    te = enq.get("tenure", {})
    for key in NAMES:
        if key not in drain and key not in enq:
            continue
        d, e = drain.get(key, {}), enq.get(key, {})
        out.append(
            f"| {NAMES[key]} | {_fmt(d.get(1))} | {_fmt(d.get(2))} "
            f"| {_ratio(t1, d.get(1))} / {_ratio(t2, d.get(2))} "
            f"| {_fmt(e.get('single'))} | {_fmt(e.get('batch'))} "
            f"| {_ratio(te.get('single'), e.get('single'))} "
            f"/ {_ratio(te.get('batch'), e.get('batch'))} |"
        )
    out.append("")
    runs = {k: [f"{d.rate:.0f}" for p in (1, 2) for d in v[p]] for k, v in r["drain"].items()}
    out.append(
        "Every drain run (1 proc runs, then 2 procs runs): "
        + "; ".join(f"{NAMES[k]} {' '.join(v)}" for k, v in runs.items())
    )
    out.append("")

    checks: list[tuple[str, str, str, bool | None]] = []

    def vs(peer: str, factor: float, label: str) -> None:
        other = drain.get(peer, {}).get(2)
        if t2 is None or other is None or other != other:
            return
        if not factor:  # a reference beside the targets, not one of them
            checks.append(
                (
                    f"drain 2 procs vs {NAMES[peer]}, {label}",
                    f"{_fmt(t2)} vs {_fmt(other)}",
                    f"{t2 / other:.2f}×",
                    None,
                )
            )
            return
        checks.append(
            (
                f"drain 2 procs ≥ {(label + ' ') if label else ''}{NAMES[peer]}",
                f"{_fmt(t2)} vs {_fmt(other)}",
                f"{t2 / other:.2f}× (need {factor:g}×)",
                t2 >= factor * other,
            )
        )

    # The PgQueuer figures are PgQueuer as shipped (batch 10): that is the
    # target; the same queue tuned to batch 100 is shown beside it for reference.
    vs("pgqueuer10", 3, "3×")
    vs("pgqueuer", 0, "tuned beyond its default (reference)")
    vs("procrastinate", 10, "10×")
    vs("celery", 1, "")
    vs("floor", 0.4, "40 % of")
    if te.get("batch") is not None:
        b = te["batch"]
        checks.append(
            ("send_many ≥ 50,000/s", f"{_fmt(b)}/s", f"{b / 50_000:.0%} of target", b >= 50_000)
        )
    if te.get("single") is not None:
        s = te["single"]
        checks.append(
            (
                "single send ≥ 1,500/s",
                f"{_fmt(s)}/s",
                f"{s / 1_500:.0%} of target"
                + (
                    f"; a bare INSERT + commit did {_fmt(floor)}/s ({s / floor:.0%} of it)"
                    if (floor := enq.get("floor", {}).get("single"))
                    else ""
                ),
                s >= 1_500,
            )
        )
    lat = r.get("latency")
    if lat:
        for case in ("idle", "loaded"):
            v = lat[case]
            p50, p99 = percentile(v, 50) * 1e3, percentile(v, 99) * 1e3
            label = "idle fleet" if case == "idle" else f"50 % load ({lat['load_rate']:.0f}/s)"
            detail = f"{len(v)} probes"
            if case == "loaded" and lat.get("sustained"):
                detail += f"; half of {lat['sustained']:.0f}/s sustained with sends on this machine"
            ok = (p50 <= 4 and p99 <= 12) if case == "idle" else None
            checks.append(
                (
                    f"pickup latency, {label}"
                    + (": p50 ≤ 4 ms, p99 ≤ 12 ms" if ok is not None else ""),
                    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                    detail,
                    ok,
                )
            )
    tk = r.get("takeover")
    if tk and tk["times"]:
        p50, p99 = percentile(tk["times"], 50), percentile(tk["times"], 99)
        checks.append(
            (
                f"takeover p99 ≤ 7 s (lease {tk['lease']})",
                f"p50 {p50:.2f} s, p99 {p99:.2f} s",
                f"{len(tk['times'])} SIGKILLs, max {max(tk['times']):.2f} s",
                p99 <= 7,
            )
        )
    rl = r.get("rolling")
    if rl:
        checks.append(
            (
                "rolling deploy: 0 lost, 0 duplicates",
                f"{rl['lost']} lost, {rl['duplicates']} duplicates of {rl['sent']}",
                f"worst second {rl['worst']}/s at {rl['rate']}/s; {rl['released']} released",
                rl["lost"] == 0 and rl["duplicates"] == 0,
            )
        )
    sc = r.get("scale")
    if sc and 1 in sc and 2 in sc:
        m = {n: median(v) for n, v in sc.items()}
        checks.append(
            (
                "scale-out 2 procs ≥ 1.8× one (20 ms I/O tasks)",
                " / ".join(f"{n}: {m[n]:.0f}/s" for n in sorted(m)),
                f"{m[2] / m[1]:.2f}×, 4 procs {m.get(4, 0) / m[1]:.2f}×",
                m[2] >= 1.8 * m[1],
            )
        )
    fp = r.get("footprint")
    if fp:
        checks.append(
            (
                "worker with 50 slots: RSS < 80 MB, ≤ 3 connections",
                f"{fp['rss_mb']:.1f} MB, {fp['connections']} connections",
                "",
                fp["rss_mb"] < 80 and fp["connections"] <= 3,
            )
        )
    out += [
        "## Acceptance targets (issue 6)",
        "",
        "| target | measured | detail | result |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {_check(ok)} |" for a, b, c, ok in checks]
    return out


def write(r: dict[str, Any]) -> None:
    meta = r["meta"]
    lines = [
        "# tenure benchmark — latest run",
        "",
        f"- database: {meta['database']}; tenure at {meta['revision']}",
        f"- tenure worker flags: `{meta['worker_flags']}` (async no-op task)",
        f"- load average at start {meta['start_load']}, at end {meta['end_load']}; "
        f"{meta['seconds']:.0f} s in all. The 2-core machine was shared with other test "
        "runs: absolute figures are noisy, ratios come from the same run.",
        "- sizes: " + ", ".join(f"`{k}={v}`" for k, v in meta["args"].items()),
        "",
    ]
    lines += tables(r)
    lines += ["", "## Peers: versions, worker settings, recovery defaults", ""]
    for info in r["peers"].values():
        lines.append(
            f"- **{info['peer']}** {info['version']}: {info['worker']}. "
            f"Recovery: {info['recovery']}."
        )
    lines.append(
        "- **SQL floor** (`bench/floor.py`): claim 100 with `FOR UPDATE SKIP LOCKED` "
        "from a hot table, complete fenced on owner by moving rows to a history table. "
        "Its one-by-one send is a bare single-row INSERT, each its own durable commit: "
        "the disk's commit latency bounds every one-by-one send here."
    )
    lines += ["", "## Load average per phase (1/5/15 min, before → after)", ""]
    lines += [f"- {k}: {a} → {b}" for k, (a, b) in r["loads"].items()]
    if r.get("rolling"):
        rl = r["rolling"]
        lines += [
            "",
            f"Rolling deploy ({rl['flags']}): finishes per second "
            f"{rl['per_second']}; SIGTERM-to-exit "
            + ", ".join(f"{x:.1f} s" for x in rl["drain_seconds"])
            + ".",
        ]
    lines += ["", "Plots: `drain.png`, `latency.png`.", ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text("\n".join(lines))
    console.print("\n".join(tables(r)), markup=False)
    console.print(f"written {RESULTS / 'latest.md'}")
    plots(r)


def plots(r: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print("[yellow]matplotlib missing (pip install -e '.[bench]'): no plots[/]")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    keys = [k for k in NAMES if k in r["drain"]]
    for i, procs in enumerate((1, 2)):
        vals = [median([d.rate for d in r["drain"][k][procs]]) for k in keys]
        ax1.bar([x + i * 0.4 for x in range(len(keys))], vals, 0.4, label=f"{procs} proc")
    ax1.set_xticks([x + 0.2 for x in range(len(keys))], [NAMES[k] for k in keys], rotation=15)
    ax1.set_ylabel("tasks/s (median)")
    ax1.set_title("no-op drain, steady state")
    ax1.legend()
    for k in keys:
        runs = r["drain"][k][2]
        if runs:
            s = runs[-1].samples
            ax2.plot([t for t, _ in s], [d for _, d in s], label=NAMES[k])
    ax2.set_xlabel("seconds since first finish (2 procs, last run)")
    ax2.set_ylabel("tasks finished")
    ax2.set_yscale("log")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "drain.png", dpi=100)
    plt.close(fig)
    lat = r.get("latency")
    if lat:
        fig, ax = plt.subplots(figsize=(6, 4))
        for case in ("idle", "loaded"):
            v = sorted(x * 1e3 for x in lat[case])
            ax.plot(v, [i / len(v) for i in range(len(v))], label=case)
        ax.set_xlabel("enqueue → start (ms)")
        ax.set_ylabel("fraction of probes")
        ax.set_xscale("log")
        ax.legend()
        ax.set_title("tenure pickup latency")
        fig.tight_layout()
        fig.savefig(RESULTS / "latency.png", dpi=100)
        plt.close(fig)
    console.print(f"plots in {RESULTS}/")
