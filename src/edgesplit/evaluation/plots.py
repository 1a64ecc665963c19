"""The report's PNG plots, drawn with matplotlib: a timeline of a run and a Pareto front.

``timeline`` shows, from the first phase's start at 0 s with the phases shaded and named: measured
and predicted latency with each fallback, timeout and resumption marked; the split point and
codec of each inference and where the edge re-planned; what the edge believed of bandwidth, RTT
and clock against the true values; and cost. A long log is drawn thinned to each stretch's
lowest and highest values (``_envelope``). ``pareto`` shows one phase's candidates (the codecs
the edge used, the conditions it believed), the split it actually ran and why that split may lie
off the drawn front.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgesplit.edge.measurements import MeasurementColumns
from edgesplit.extras import needs_extra

if TYPE_CHECKING:
    from edgesplit.core.planning import SplitPlan
    from edgesplit.evaluation.report import ParetoChoice, Phase

MAX_POINTS = 4000  # per series in the timeline; more are thinned by ``_envelope``
LABEL_GAP_PX = (26.0, 10.0)  # labels of split points closer than this (x, y) share one label
LEAD_S = 0.5  # shown before the first inference began
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.005, 1.0), "fontsize": 8, "frameon": False}


def _pyplot() -> Any:
    with needs_extra("drawing a report's plots"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    return plt


def timeline(log: MeasurementColumns, phases: Sequence[Phase], out_dir: Path) -> Path | None:
    """``timeline.png`` against seconds since the first phase began, or since shortly before the
    first inference began if that is later (a demo's start-up loads the edge for seconds):
    latency with what became of each inference marked, the split point and
    codec, what the edge believed of bandwidth, RTT and clock against the true values (the
    phases'), and cost; None for an empty log."""
    if not len(log):
        return None
    plt = _pyplot()
    base = datetime.fromisoformat(log["time"][0])
    t_all = np.fromiter(((datetime.fromisoformat(s) - base).total_seconds() for s in log["time"]),
                        dtype=float, count=len(log))
    began = float((t_all - log["latency_s"]).min())
    first = (datetime.fromisoformat(phases[0].start) - base).total_seconds() if phases else None
    zero = began if first is None else max(first, began - LEAD_S)
    since = "phase began" if zero == first else "inference began"

    def seconds(stamp: str) -> float:
        return (datetime.fromisoformat(stamp) - base).total_seconds() - zero

    shown = log.take(t_all >= zero)
    t = t_all[t_all >= zero] - zero
    fig, axes = plt.subplots(6, 1, figsize=(13, 15), sharex=True,
                             gridspec_kw={"height_ratios": (3, 2, 1.4, 1.4, 1.2, 1.4)})
    latency, split, bandwidth, rtt, clock, cost = axes
    _latency(latency, t, shown)
    _split(split, t, shown)
    for ax, column, true, label in (
            (bandwidth, "bandwidth_kbps", lambda p: p.bandwidth_kbps, "bandwidth (kbit/s)"),
            (rtt, "rtt_ms", lambda p: p.rtt_ms, "round trip (ms)"),
            (clock, "clock_ghz", lambda p: p.clock_ghz, "edge clock (GHz)")):
        _believed(ax, *_envelope(t, shown[column]), phases, seconds, true, label)
    cost.plot(*_envelope(t, shown["cost_usd"] * 1e6), ".-", lw=0.8, ms=4, label="measured")
    cost.legend(**LEGEND)
    cost.set_ylabel("cost per\ninference (µ$)")
    cost.set_xlabel(f"seconds since the first {since}")
    cost.set_xlim(left=0, right=max([t.max(initial=1.0), *(seconds(p.end) for p in phases)]))
    _shade_phases(axes, phases, seconds)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.align_ylabels(axes)
    fig.tight_layout(h_pad=0.6)
    path = out_dir / "timeline.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _envelope(t: np.ndarray, y: np.ndarray,
              limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``limit`` points of a series: each of ``limit / 2`` stretches keeps its
    lowest and its highest, so a spike still shows (drawing 200k markers took seconds and
    showed no more)."""
    if len(y) <= limit:
        return t, y
    stretches = np.array_split(np.arange(len(y)), limit // 2)
    keep = np.unique(np.concatenate([(s[np.argmin(y[s])], s[np.argmax(y[s])])
                                     for s in stretches]))
    return t[keep], y[keep]


# How each outcome (report.outcome) is marked on the latency plot: marker, colour, legend.
OUTCOME_MARKS = {
    "offline": ("o", "red", "on the edge: cloud known\ndown, not tried"),
    "timed out": ("X", "darkred", "on the edge after the cloud\nmissed the deadline (a spike:\n"
                  "deadline + rest of the network)"),
    "fell back": ("^", "darkorange", "on the edge: the cloud\nrefused or was unreachable"),
    "resumed": ("D", "green", "offloading again: the edge\nretried the cloud, it answered"),
}


def _latency(ax: Any, t: np.ndarray, shown: MeasurementColumns) -> None:
    from edgesplit.evaluation.report import outcomes

    measured = shown["latency_s"] * 1e3
    ax.plot(*_envelope(t, measured), ".-", label="measured", lw=0.8, ms=4, color="tab:blue")
    ax.plot(*_envelope(t, shown["predicted_latency_s"] * 1e3), "--",
            label="predicted by the edge\nwhen it planned", lw=0.9, color="tab:orange")
    became = outcomes(shown)
    for name, (marker, colour, label) in OUTCOME_MARKS.items():
        which = became == name
        if which.any():
            ax.scatter(*_envelope(t[which], measured[which]), marker=marker, color=colour, s=42,
                       zorder=3, label=f"{label} ({int(which.sum())})")
    _plain_axis(ax.yaxis, measured, ax.set_yscale)
    ax.set_ylabel("latency (ms)")
    ax.legend(**LEGEND)


def _split(ax: Any, t: np.ndarray, shown: MeasurementColumns) -> None:
    """The split point each inference ran, coloured by codec, and where the edge re-planned."""
    from matplotlib.ticker import MaxNLocator

    splits = shown["split_point"]
    ax.step(*_envelope(t, splits), where="post", color="grey", lw=0.8)
    cloud = shown["finished"] == "cloud"
    for codec in sorted(set(shown["codec"][cloud].tolist())):
        which = cloud & (shown["codec"] == codec)
        ax.scatter(*_envelope(t[which], splits[which]), s=16, zorder=3, label=f"sent {codec}")
    if (~cloud).any():
        ax.scatter(*_envelope(t[~cloud], splits[~cloud]), s=16, zorder=3, color="red",
                   label="all on the edge")
    top = int(splits.max(initial=0)) + 1.5
    replans = t[shown["replan"] != ""]
    if len(replans):  # no legend entry for marks that are not there
        ax.scatter(*_envelope(replans, np.full(len(replans), top)), marker="v", s=14,
                   color="black", label="re-planned (why: the\nlog's replan column)")
    ax.set_ylim(-1, top + 1.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("split point")
    ax.legend(**LEGEND)


def _believed(ax: Any, t: np.ndarray, believed: np.ndarray, phases: Sequence[Phase],
              seconds: Callable[[str], float], true: Callable[[Phase], float],
              label: str) -> None:
    """What the edge believed when it planned each inference, against the phases' truth."""
    ax.plot(t, believed, ".-", lw=0.8, ms=3, color="tab:purple", label="the edge believed",
            zorder=3)
    values = believed.tolist()
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


def _plain_axis(axis: Any, values: Sequence[float] | np.ndarray, set_scale: Any) -> None:
    """Logarithmic when the values span more than ten times, and in plain numbers either way
    (20, 50, 100; never 2x10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    numbers = np.asarray(values, dtype=float)
    positive = numbers[numbers > 0]
    if len(positive) and positive.max() > 10 * positive.min():
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
