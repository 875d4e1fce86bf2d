"""Figures of a simulated day: the table's row, and the plots (matplotlib, imported late)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sim.engine import Result


def percentile(waits: Sequence[tuple[float, int]], q: float) -> float:
    """The q-th percentile (0-100) of waits weighted by their units."""
    ordered = sorted(waits)
    total = sum(units for _, units in ordered)
    if not total:
        return 0.0
    rank, seen = q / 100.0 * total, 0
    for wait, units in ordered:
        seen += units
        if seen >= rank:
            return wait
    return ordered[-1][0]


def all_waits(result: Result) -> list[tuple[float, int]]:
    """Served waits and, for work still waiting at the end, the wait so far."""
    return result.waits + result.unserved


def row(result: Result) -> dict[str, object]:
    waits = all_waits(result)
    return {
        "setting": result.label,
        "p50": percentile(waits, 50),
        "p95": percentile(waits, 95),
        "max": max((w for w, _ in waits), default=0.0),
        "unserved": sum(units for _, units in result.unserved),
        "machine_h": sum(result.machine_seconds.values()) / 3600.0,
        "adds": result.adds,
        "retires": result.retires,
        "flaps": result.flaps,
        "decides": result.decide_calls,
    }


def _s(value: float) -> str:
    if value < 10:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def table(rows: Sequence[dict[str, object]]) -> str:
    head = ("| setting | wait p50 s | wait p95 s | wait max s | machine-hours | adds | "
            "retires | flaps |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        counts = [f"{r[k]:,}" if isinstance(r[k], int) else str(r[k])
                  for k in ("adds", "retires", "flaps")]
        lines.append(f"| {r['setting']} | {_s(r['p50'])} | {_s(r['p95'])} | {_s(r['max'])} "
                     f"| {r['machine_h']:,.0f} | {' | '.join(counts)} |")
    return "\n".join(lines)


def plots(out: Path, reference: Result, results: Sequence[Result], oracle_h: float,
          focus: str) -> list[Path]:
    """Three PNGs in `out`; `focus` is the label of the setting drawn over the demand."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    hours = [t / 3600.0 for t in reference.times]
    types = reference.types

    fig, axes = plt.subplots(len(types), 1, figsize=(9, 2.4 * len(types)), sharex=True)
    shown = [r for r in results if r.label == focus] or list(results[:1])
    for ax, name in zip(axes, types, strict=True):
        ax.plot(hours, reference.wanted[name], color="0.3", lw=1.0,
                label="demand (machines' worth, no waiting)")
        for result in shown:
            x = [t / 3600.0 for t in result.times]
            ax.step(x, result.on[name], where="post", lw=1.0, label=f"machines on, {result.label}")
            ax.plot(x, result.wanted[name], lw=0.8, ls=":",
                    label=f"demand incl. waiting, {result.label}")
        ax.set_ylabel(f"{name}\nmachines")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("simulated hour")
    fig.suptitle("Demand and machines on, per node type", fontsize=10)
    fig.tight_layout()
    written.append(out / "demand-and-machines.png")
    fig.savefig(written[-1], dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    for result in [reference, *results]:
        waits = sorted(all_waits(result))
        total = sum(units for _, units in waits)
        if not total:
            continue
        xs, ys, seen = [], [], 0
        for wait, units in waits:
            seen += units
            xs.append(max(wait, 0.1))
            ys.append(seen / total)
        style = {"color": "k", "lw": 2} if result is reference else {"lw": 1}
        ax.step(xs, ys, where="post", label=result.label, **style)
    ax.set_xscale("log")
    ax.set_xlabel("wait from arrival to placement, s (log; below 0.1 s drawn at 0.1 s)")
    ax.set_ylabel("share of demand")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Wait time distribution (tasks and actors each, a placement group whole)",
                 fontsize=10)
    fig.tight_layout()
    written.append(out / "wait-distribution.png")
    fig.savefig(written[-1], dpi=80)
    plt.close(fig)

    written.append(cost_vs_wait(out, [row(r) for r in results], row(reference), oracle_h))
    return written



def cost_vs_wait(out: Path, rows: Sequence[dict[str, object]], reference: dict[str, object],
                 oracle_h: float) -> Path:
    """Machine-hours against wait (p95 and p50), one mark per setting (rows of `row`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, r in enumerate(rows):
        ax.plot([r["machine_h"]] * 2, [r["p50"], r["p95"]], color="0.8", lw=1, zorder=1)
        ax.scatter(r["machine_h"], r["p95"], color=colors[index % len(colors)],
                   marker="os^Dv<>p"[index // len(colors) % 8], label=r["setting"], zorder=2)
        ax.scatter(r["machine_h"], r["p50"], marker="x", color="0.5", zorder=2)
    ax.axvline(oracle_h, color="g", ls="--", lw=1)
    ax.text(oracle_h, 0.5, f" oracle lower bound: {oracle_h:,.0f} h ", rotation=90,
            fontsize=7, va="center", ha="right", transform=ax.get_xaxis_transform())
    ax.set_xlim(left=oracle_h * 0.97)
    ax.set_ylim(bottom=0)
    ax.text(0.99, 0.97, f"all machines always on: {reference['machine_h']:,.0f} h, "
            f"wait p95 {reference['p95']:.0f} s (off the scale)", transform=ax.transAxes,
            fontsize=7, ha="right", va="top")
    ax.set_xlabel("machine-hours in the day")
    ax.set_ylabel("wait, s: p95 (marks), p50 (crosses)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Cost against wait, per policy setting", fontsize=10)
    fig.tight_layout()
    path = out / "cost-vs-wait.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
