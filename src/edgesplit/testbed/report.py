"""Reports from a measurement log: a markdown summary and PNG plots.

``summarise`` is pure (measurements and phases in, one summary row per phase out);
``build_report`` reads the log, draws the plots with matplotlib and writes ``summary.md``.
A *phase* is a stretch of time with known true conditions (the demo's scenario, or one
experiment setting); without phases the whole log is one.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from edgesplit.core.planning import SplitPlan
from edgesplit.edge.measurements import Measurement, check_log, read_measurements
from edgesplit.extras import needs_extra

PHASES_FILE = "phases.json"


@dataclass(frozen=True)
class Phase:
    """True conditions from ``start`` (ISO 8601) to ``end``; ``cloud_up`` False = an outage."""

    name: str
    start: str
    end: str
    bandwidth_kbps: float
    rtt_ms: float
    clock_ghz: float
    cloud_up: bool = True


@dataclass(frozen=True)
class PhaseSummary:
    phase: str
    inferences: int
    in_cloud: int
    on_edge: int
    split_points: str  # the split points used, most used first
    codecs: str
    median_latency_s: float
    median_predicted_s: float
    prediction_error: float  # median |predicted - measured| / measured
    cost_usd: float  # total


def summarise(measurements: Sequence[Measurement],
              phases: Sequence[Phase] = ()) -> list[PhaseSummary]:
    """One summary per phase (measurements outside every phase are left out)."""
    if not phases:  # one group per run of the runtime
        groups: dict[str, list[Measurement]] = {}
        for m in measurements:
            groups.setdefault(f"run {m.run}", []).append(m)
    else:
        groups = {p.name: [m for m in measurements if p.start <= m.time < p.end] for p in phases}
    rows = []
    for name, group in groups.items():
        if not group:
            rows.append(PhaseSummary(name, 0, 0, 0, "", "", 0.0, 0.0, 0.0, 0.0))
            continue
        rows.append(PhaseSummary(
            phase=name,
            inferences=len(group),
            in_cloud=sum(m.finished == "cloud" for m in group),
            on_edge=sum(m.finished != "cloud" for m in group),
            split_points=_most_used([m.split_point for m in group]),
            codecs=_most_used([m.codec for m in group if m.finished == "cloud"]),
            median_latency_s=statistics.median(m.latency_s for m in group),
            median_predicted_s=statistics.median(m.predicted_latency_s for m in group),
            prediction_error=statistics.median(
                abs(m.predicted_latency_s - m.latency_s) / m.latency_s for m in group
                if m.latency_s > 0 and m.finished == "cloud") if any(
                m.finished == "cloud" for m in group) else 0.0,
            cost_usd=sum(m.cost_usd for m in group),
        ))
    return rows


def _most_used(values: Sequence[object]) -> str:
    counts: dict[object, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return ", ".join(f"{v} ({n})" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def write_phases(phases: Sequence[Phase], directory: Path) -> None:
    (Path(directory) / PHASES_FILE).write_text(json.dumps([asdict(p) for p in phases], indent=1))


def read_phases(directory: Path) -> list[Phase]:
    path = Path(directory) / PHASES_FILE
    return [Phase(**p) for p in json.loads(path.read_text())] if path.exists() else []


def build_report(log_dir: Path, out_dir: Path | None = None, *, title: str = "edgesplit run",
                 pareto_plan: SplitPlan | None = None) -> Path:
    """Plots and ``summary.md`` for the log in ``log_dir``; returns the summary's path."""
    log_dir = Path(log_dir)
    out_dir = Path(out_dir or log_dir)
    check_log(log_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    measurements = read_measurements(log_dir)
    phases = read_phases(log_dir)
    summary = summarise(measurements, phases)
    figures = _plot_timeline(measurements, phases, out_dir)
    if pareto_plan is not None:
        figures.append(_plot_pareto(pareto_plan, out_dir))
    lines = [f"# {title}", "",
             f"{len(measurements)} inferences, "
             f"{sum(m.finished == 'cloud' for m in measurements)} finished in the cloud, "
             f"{sum(m.finished != 'cloud' for m in measurements)} on the edge "
             f"(fallback or outage); none lost.", ""]
    if phases:
        lines += ["| phase | true conditions |", "|---|---|"]
        lines += [f"| {p.name} | {p.bandwidth_kbps:g} kbit/s, RTT {p.rtt_ms:g} ms, "
                  f"{p.clock_ghz:g} GHz{'' if p.cloud_up else ', cloud down'} |" for p in phases]
        lines.append("")
    lines += ["| phase | inferences | cloud | edge | split points (count) | codecs | "
              "median latency ms | median predicted ms | median prediction error | cost µ$ |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s.phase} | {s.inferences} | {s.in_cloud} | {s.on_edge} | {s.split_points} | "
              f"{s.codecs} | {s.median_latency_s * 1e3:.1f} | {s.median_predicted_s * 1e3:.1f} "
              f"| {s.prediction_error:.0%} | {s.cost_usd * 1e6:.3f} |" for s in summary]
    lines += ["", *[f"![{f.stem}]({f.name})" for f in figures], ""]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _plot_timeline(measurements: Sequence[Measurement], phases: Sequence[Phase],
                   out_dir: Path) -> list[Path]:
    with needs_extra("drawing a report's plots"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    if not measurements:
        return []
    origin = datetime.fromisoformat(measurements[0].time)

    def seconds(stamp: str) -> float:
        return (datetime.fromisoformat(stamp) - origin).total_seconds()

    t = [seconds(m.time) for m in measurements]
    in_cloud = [m.finished == "cloud" for m in measurements]
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    latency, cost, split = axes
    latency.plot(t, [m.latency_s * 1e3 for m in measurements], ".-", label="measured", lw=0.8)
    latency.plot(t, [m.predicted_latency_s * 1e3 for m in measurements], "--",
                 label="predicted", lw=0.8)
    latency.scatter([x for x, c in zip(t, in_cloud, strict=True) if not c],
                    [m.latency_s * 1e3 for m, c in zip(measurements, in_cloud, strict=True)
                     if not c], color="red", zorder=3, label="finished on the edge")
    latency.set_ylabel("latency (ms)")
    latency.set_yscale("log")
    latency.legend(loc="upper left", fontsize=8)
    cost.plot(t, [m.cost_usd * 1e6 for m in measurements], ".-", lw=0.8)
    cost.set_ylabel("cost per inference (µ$)")
    split.step(t, [m.split_point for m in measurements], where="post")
    split.set_ylabel("split point")
    split.set_xlabel("time (s)")
    for ax in axes:
        for i, p in enumerate(phases):
            ax.axvspan(seconds(p.start), seconds(p.end), alpha=0.08 if i % 2 else 0.0,
                       color="grey" if p.cloud_up else "red")
    for p in phases:
        axes[0].annotate(p.name, (seconds(p.start), 1.01), xycoords=("data", "axes fraction"),
                         fontsize=7, rotation=20)
    fig.tight_layout()
    path = out_dir / "timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _plot_pareto(plan: SplitPlan, out_dir: Path) -> Path:
    with needs_extra("drawing a report's plots"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    rows = plan.candidates
    ax.scatter([c.latency_s * 1e3 for c in rows], [c.cost_usd * 1e6 for c in rows],
               color="grey", label="split points")
    front = [plan.candidate(sp) for sp in plan.pareto]
    ax.plot([c.latency_s * 1e3 for c in front], [c.cost_usd * 1e6 for c in front], "o-",
            color="tab:blue", label="Pareto front")
    chosen = plan.chosen
    ax.scatter([chosen.latency_s * 1e3], [chosen.cost_usd * 1e6], s=160, facecolors="none",
               edgecolors="red", linewidths=2, label=f"chosen: split {chosen.split_point}")
    for c in rows:
        ax.annotate(str(c.split_point), (c.latency_s * 1e3, c.cost_usd * 1e6), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    cond = plan.conditions
    codecs = ", ".join(sorted({c.codec for c in rows}))
    ax.set_title(f"{plan.model}: {cond.bandwidth_kbps:g} kbit/s, RTT {cond.rtt_ms:g} ms, "
                 f"{cond.clock_ghz:g} GHz, {plan.objective.edge} edge, {codecs} tensors",
                 fontsize=10)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("predicted cost per inference (µ$)")
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "pareto.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
