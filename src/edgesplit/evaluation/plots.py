"""The report's PNG plots, drawn with matplotlib: a timeline of a run and a Pareto front.

``timeline`` shows measured and predicted latency, cost and split point over time, from the first
phase's start at 0 s, with the phases shaded and named; ``pareto`` shows one phase's candidates
(the codecs the edge used, the conditions it believed) and the split it actually ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesplit.edge.measurements import Measurement
from edgesplit.extras import needs_extra

if TYPE_CHECKING:
    from edgesplit.core.planning import SplitPlan
    from edgesplit.evaluation.report import ParetoChoice, Phase

LABEL_GAP_PX = (26.0, 10.0)  # labels of split points closer than this (x, y) share one label


def _pyplot() -> Any:
    with needs_extra("drawing a report's plots"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    return plt


def timeline(measurements: Sequence[Measurement], phases: Sequence[Phase],
             out_dir: Path) -> Path | None:
    """``timeline.png``: latency, cost and split point against seconds since the first phase
    began (the whole log when there are no phases); None for an empty log."""
    if not measurements:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    origin = datetime.fromisoformat(phases[0].start if phases else measurements[0].time)

    def seconds(stamp: str) -> float:
        return (datetime.fromisoformat(stamp) - origin).total_seconds()

    shown = [m for m in measurements if seconds(m.time) >= 0]  # start-up is no phase's
    t = [seconds(m.time) for m in shown]
    fig, (latency, cost, split) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    latency.plot(t, [m.latency_s * 1e3 for m in shown], ".-", label="measured", lw=0.8)
    latency.plot(t, [m.predicted_latency_s * 1e3 for m in shown], "--", label="predicted",
                 lw=0.8)
    local = [(x, m.latency_s * 1e3) for x, m in zip(t, shown, strict=True)
             if m.finished != "cloud"]
    if local:
        latency.scatter(*zip(*local, strict=True), color="red", zorder=3,
                        label="finished on the edge")
    _plain_axis(latency.yaxis, [m.latency_s * 1e3 for m in shown], latency.set_yscale)
    latency.set_ylabel("latency (ms)")
    latency.legend(loc="upper left", fontsize=8)
    cost.plot(t, [m.cost_usd * 1e6 for m in shown], ".-", lw=0.8)
    cost.set_ylabel("cost per inference (µ$)")
    split.step(t, [m.split_point for m in shown], where="post")
    split.yaxis.set_major_locator(MaxNLocator(integer=True))
    split.set_ylabel("split point")
    split.set_xlabel(f"seconds since the first {'phase began' if phases else 'inference'}")
    split.set_xlim(left=0, right=max([*t, *(seconds(p.end) for p in phases), 1.0]))
    _shade_phases((latency, cost, split), phases, seconds)
    fig.tight_layout()
    path = out_dir / "timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _shade_phases(axes: Sequence[Any], phases: Sequence[Phase], seconds: Any) -> None:
    """Every other phase shaded (outages in red), names level above the top plot, alternating
    in height so that neighbours never overlap."""
    for ax in axes:
        for i, p in enumerate(phases):
            if i % 2 or not p.cloud_up:
                ax.axvspan(seconds(p.start), seconds(p.end), alpha=0.08 if p.cloud_up else 0.12,
                           color="grey" if p.cloud_up else "red", lw=0)
    top = axes[0]
    for i, p in enumerate(phases):
        middle = (seconds(p.start) + seconds(p.end)) / 2
        top.annotate(p.name.replace(", ", ",\n"), (middle, 1.02 + 0.12 * (i % 2)),
                     xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=9,
                     color="darkred" if not p.cloud_up else "black")


def pareto(plan: SplitPlan, choice: ParetoChoice, out_dir: Path) -> Path:
    """``pareto.png``: every split point's predicted latency and cost with the codecs the edge
    used, the Pareto front, and the split the edge ran most in that phase."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    rows = plan.candidates
    ax.scatter([c.latency_s * 1e3 for c in rows], [c.cost_usd * 1e6 for c in rows],
               color="grey", s=18, label="split points")
    front = [plan.candidate(sp) for sp in plan.pareto]
    ax.plot([c.latency_s * 1e3 for c in front], [c.cost_usd * 1e6 for c in front], "o-",
            color="tab:blue", ms=4, label="Pareto front")
    ran = plan.candidate(choice.split_point)
    ax.scatter([ran.latency_s * 1e3], [ran.cost_usd * 1e6], s=180, facecolors="none",
               edgecolors="red", linewidths=2,
               label=f"ran most: split {ran.split_point} ({', '.join(choice.codecs)})")
    _plain_axis(ax.xaxis, [c.latency_s * 1e3 for c in rows], ax.set_xscale)
    _label_split_points(ax, [(c.split_point, c.latency_s * 1e3, c.cost_usd * 1e6)
                             for c in rows])
    cond = choice.conditions
    ax.set_title(f"{plan.model}, phase '{choice.phase}': as the edge believed it, "
                 f"{cond.bandwidth_kbps:.0f} kbit/s,\nRTT {cond.rtt_ms:.0f} ms, "
                 f"{cond.clock_ghz:g} GHz; {plan.objective.edge} edge, "
                 f"{plan.objective.strategy} w={plan.objective.weight:g}; "
                 f"codecs {', '.join(choice.codecs)}", fontsize=10)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("predicted cost per inference (µ$)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "pareto.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plain_axis(axis: Any, values: Sequence[float], set_scale: Any) -> None:
    """Logarithmic when the values span more than ten times, and in plain numbers either way
    (20, 50, 100; never 2x10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [v for v in values if v > 0]
    if positive and max(positive) > 10 * min(positive):
        set_scale("log")
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def _label_split_points(ax: Any, points: Sequence[tuple[int, float, float]]) -> None:
    """One label per cluster of points that would print on top of each other ("15-18")."""
    ax.autoscale_view()
    to_pixels = ax.transData.transform
    clusters: list[tuple[float, float, list[int], tuple[float, float]]] = []
    for split_point, x, y in sorted(points):
        px, py = to_pixels((x, y))
        for cx, cy, members, _ in clusters:
            if abs(px - cx) < LABEL_GAP_PX[0] and abs(py - cy) < LABEL_GAP_PX[1]:
                members.append(split_point)
                break
        else:
            clusters.append((px, py, [split_point], (x, y)))
    for _, _, members, at in clusters:
        ax.annotate(_ranges(members), at, fontsize=7, xytext=(4, 3),
                    textcoords="offset points")


def _ranges(numbers: Sequence[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
