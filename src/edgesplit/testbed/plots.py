"""The report's PNG plots, drawn with matplotlib: a timeline of a run and a Pareto front.

``timeline`` shows, from the first phase's start at 0 s with the phases shaded and named: measured
and predicted latency with each fallback, timeout and resumption marked; the split point and
codec of each inference and where the edge re-planned; what the edge believed of bandwidth, RTT
and clock against the true values; and cost. ``pareto`` shows one phase's candidates (the codecs
the edge used, the conditions it believed), the split it actually ran and why that split may lie
off the drawn front.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesplit.edge.measurements import Measurement
from edgesplit.extras import needs_extra

if TYPE_CHECKING:
    from edgesplit.core.planning import SplitPlan
    from edgesplit.testbed.report import ParetoChoice, Phase

LABEL_GAP_PX = (26.0, 10.0)  # labels of split points closer than this (x, y) share one label
LEAD = timedelta(seconds=0.5)  # shown before the first inference began
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.005, 1.0), "fontsize": 8, "frameon": False}


def _pyplot() -> Any:
    with needs_extra("drawing a report's plots"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    return plt


def timeline(measurements: Sequence[Measurement], phases: Sequence[Phase],
             out_dir: Path) -> Path | None:
    """``timeline.png`` against seconds since the first phase began, or since shortly before the
    first inference began if that is later (a demo's start-up loads the edge for seconds):
    latency with what became of each inference marked, the split point and
    codec, what the edge believed of bandwidth, RTT and clock against the true values (the
    phases'), and cost; None for an empty log."""
    if not measurements:
        return None
    plt = _pyplot()
    began = min(datetime.fromisoformat(m.time) - timedelta(seconds=m.latency_s)
                for m in measurements)
    origin = max(datetime.fromisoformat(phases[0].start), began - LEAD) if phases else began
    since = ("phase began" if phases and origin == datetime.fromisoformat(phases[0].start)
             else "inference began")

    def seconds(stamp: str) -> float:
        return (datetime.fromisoformat(stamp) - origin).total_seconds()

    shown = [m for m in measurements if seconds(m.time) >= 0]
    t = [seconds(m.time) for m in shown]
    fig, axes = plt.subplots(6, 1, figsize=(13, 15), sharex=True,
                             gridspec_kw={"height_ratios": (3, 2, 1.4, 1.4, 1.2, 1.4)})
    latency, split, bandwidth, rtt, clock, cost = axes
    _latency(latency, t, shown)
    _split(split, t, shown)
    _believed(bandwidth, t, [m.bandwidth_kbps for m in shown], phases, seconds,
              lambda p: p.bandwidth_kbps, "bandwidth (kbit/s)")
    _believed(rtt, t, [m.rtt_ms for m in shown], phases, seconds, lambda p: p.rtt_ms,
              "round trip (ms)")
    _believed(clock, t, [m.clock_ghz for m in shown], phases, seconds, lambda p: p.clock_ghz,
              "edge clock (GHz)")
    cost.plot(t, [m.cost_usd * 1e6 for m in shown], ".-", lw=0.8, ms=4, label="measured")
    cost.legend(**LEGEND)
    cost.set_ylabel("cost per\ninference (µ$)")
    cost.set_xlabel(f"seconds since the first {since}")
    cost.set_xlim(left=0, right=max([*t, *(seconds(p.end) for p in phases), 1.0]))
    _shade_phases(axes, phases, seconds)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.align_ylabels(axes)
    fig.tight_layout(h_pad=0.6)
    path = out_dir / "timeline.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# How each outcome (report.outcome) is marked on the latency plot: marker, colour, legend.
OUTCOME_MARKS = {
    "offline": ("o", "red", "on the edge: cloud known\ndown, not tried"),
    "timed out": ("X", "darkred", "on the edge after the cloud\nmissed the deadline (a spike:\n"
                  "deadline + rest of the network)"),
    "fell back": ("^", "darkorange", "on the edge: the cloud\nrefused or was unreachable"),
    "resumed": ("D", "green", "offloading again: the edge\nretried the cloud, it answered"),
}


def _latency(ax: Any, t: Sequence[float], shown: Sequence[Measurement]) -> None:
    from edgesplit.testbed.report import outcome

    ax.plot(t, [m.latency_s * 1e3 for m in shown], ".-", label="measured", lw=0.8, ms=4,
            color="tab:blue")
    ax.plot(t, [m.predicted_latency_s * 1e3 for m in shown], "--",
            label="predicted by the edge\nwhen it planned", lw=0.9, color="tab:orange")
    outcomes = [outcome(m, shown[i - 1] if i else None) for i, m in enumerate(shown)]
    for name, (marker, colour, label) in OUTCOME_MARKS.items():
        points = [(x, m.latency_s * 1e3) for x, m, o in zip(t, shown, outcomes, strict=True)
                  if o == name]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, color=colour, s=42, zorder=3,
                       label=f"{label} ({len(points)})")
    _plain_axis(ax.yaxis, [m.latency_s * 1e3 for m in shown], ax.set_yscale)
    ax.set_ylabel("latency (ms)")
    ax.legend(**LEGEND)


def _split(ax: Any, t: Sequence[float], shown: Sequence[Measurement]) -> None:
    """The split point each inference ran, coloured by codec, and where the edge re-planned."""
    from matplotlib.ticker import MaxNLocator

    ax.step(t, [m.split_point for m in shown], where="post", color="grey", lw=0.8)
    offloads = [(x, m) for x, m in zip(t, shown, strict=True) if m.finished == "cloud"]
    for codec in sorted({m.codec for _, m in offloads}):
        points = [(x, m.split_point) for x, m in offloads if m.codec == codec]
        ax.scatter(*zip(*points, strict=True), s=16, zorder=3, label=f"sent {codec}")
    local = [(x, m.split_point) for x, m in zip(t, shown, strict=True) if m.finished != "cloud"]
    if local:
        ax.scatter(*zip(*local, strict=True), s=16, zorder=3, color="red",
                   label="all on the edge")
    replans = [x for x, m in zip(t, shown, strict=True) if m.replan]
    top = max(m.split_point for m in shown) + 1.5
    ax.scatter(replans, [top] * len(replans), marker="v", s=14, color="black",
               label="re-planned (why: the\nlog's replan column)")
    ax.set_ylim(-1, top + 1.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("split point")
    ax.legend(**LEGEND)


def _believed(ax: Any, t: Sequence[float], believed: Sequence[float], phases: Sequence[Phase],
              seconds: Any, true: Any, label: str) -> None:
    """What the edge believed when it planned each inference, against the phases' truth."""
    ax.plot(t, believed, ".-", lw=0.8, ms=3, color="tab:purple", label="the edge believed",
            zorder=3)
    values = list(believed)
    if phases:
        xs = [x for p in phases for x in (seconds(p.start), seconds(p.end))]
        ys = [true(p) for p in phases for _ in (0, 1)]
        ax.plot(xs, ys, color="black", lw=1.4, alpha=0.6, label="true")
        values += ys
    ax.margins(y=0.12)
    _plain_axis(ax.yaxis, values, ax.set_yscale)
    ax.set_ylabel(label)
    ax.legend(**LEGEND)


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
        middle = (max(seconds(p.start), 0.0) + seconds(p.end)) / 2  # of the part shown
        top.annotate(p.name.replace(", ", ",\n"), (middle, 1.02 + 0.12 * (i % 2)),
                     xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=9,
                     color="darkred" if not p.cloud_up else "black")


def pareto(plan: SplitPlan, choice: ParetoChoice, reason: str, out_dir: Path) -> Path:
    """``pareto.png``: every split point's predicted latency and cost with the codecs the edge
    used, the Pareto front, the split the edge ran most in that phase, what the edge itself
    predicted for the splits it ran, and ``reason``: why the split it ran is off the front."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    rows = plan.candidates
    ax.scatter([c.latency_s * 1e3 for c in rows], [c.cost_usd * 1e6 for c in rows],
               color="grey", s=18, label="split points (the profile's predictions)")
    front = [plan.candidate(sp) for sp in plan.pareto]
    ax.plot([c.latency_s * 1e3 for c in front], [c.cost_usd * 1e6 for c in front], "o-",
            color="tab:blue", ms=4, label="Pareto front")
    ran = plan.candidate(choice.split_point)
    ax.scatter([ran.latency_s * 1e3], [ran.cost_usd * 1e6], s=180, facecolors="none",
               edgecolors="red", linewidths=2,
               label=f"ran most: split {ran.split_point} ({', '.join(choice.codecs)})")
    own = choice.edge_predictions
    if own:
        ax.scatter([p.latency_s * 1e3 for p in own], [p.cost_usd * 1e6 for p in own],
                   marker="x", color="red", s=40, zorder=3,
                   label="the edge's own prediction for\na split it ran (median)")
        for p in own:
            ax.annotate(f"{p.split_point} ({p.count}x)", (p.latency_s * 1e3, p.cost_usd * 1e6),
                        fontsize=7, color="red", xytext=(4, -9), textcoords="offset points")
    _plain_axis(ax.xaxis, [c.latency_s * 1e3 for c in rows]
                + [p.latency_s * 1e3 for p in own], ax.set_xscale)
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
    lines = textwrap.wrap(reason, 125)
    if lines:
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=8, va="bottom")
    fig.tight_layout(rect=(0, 0.01 + 0.03 * len(lines), 1, 1))
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
