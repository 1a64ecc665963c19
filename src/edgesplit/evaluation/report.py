"""Reports from a measurement log: a markdown summary and PNG plots.

``summarise`` and ``pareto_choice`` are pure (measurements and phases in, one summary row per
phase or what the Pareto plot shows out); ``build_report`` reads the log, draws the plots
(``plots``, matplotlib) and writes ``summary.md`` into a folder of its own.
A *phase* is a stretch of time with known true conditions (the demo's scenario, or one
experiment setting); without phases the whole log is one.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edgesplit.core.planning import Objective
from edgesplit.core.predictors import Conditions
from edgesplit.core.profiles import Profile
from edgesplit.edge.measurements import Measurement, check_log, read_measurements
from edgesplit.errors import InvalidArgument
from edgesplit.evaluation import plots
from edgesplit.measuring.store import cached_planner, read_profile

PHASES_FILE = "phases.json"
PROFILE_FILE = "edge-profile.json"  # the edge's profile, beside its log


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
    prediction_error: float | None  # median |predicted - measured| / measured of offloads
    cost_usd: float  # total


def summarise(measurements: Sequence[Measurement],
              phases: Sequence[Phase] = ()) -> list[PhaseSummary]:
    """One summary per phase (measurements outside every phase are left out)."""
    return [_summary(name, group) for name, group in _groups(measurements, phases).items()]


def _groups(measurements: Sequence[Measurement],
            phases: Sequence[Phase]) -> dict[str, list[Measurement]]:
    """Measurements by phase, or by run of the runtime when there are no phases."""
    if phases:
        return {p.name: [m for m in measurements if p.start <= m.time < p.end] for p in phases}
    groups: dict[str, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault(f"run {m.run}", []).append(m)
    return groups


def _summary(name: str, group: Sequence[Measurement]) -> PhaseSummary:
    if not group:
        return PhaseSummary(name, 0, 0, 0, "", "", 0.0, 0.0, None, 0.0)
    offloads = [m for m in group if m.finished == "cloud"]
    errors = [abs(m.predicted_latency_s - m.latency_s) / m.latency_s for m in offloads
              if m.latency_s > 0]
    return PhaseSummary(
        phase=name,
        inferences=len(group),
        in_cloud=len(offloads),
        on_edge=len(group) - len(offloads),
        split_points=_most_used([m.split_point for m in group]),
        codecs=_most_used([m.codec for m in offloads]),
        median_latency_s=statistics.median(m.latency_s for m in group),
        median_predicted_s=statistics.median(m.predicted_latency_s for m in group),
        prediction_error=statistics.median(errors) if errors else None,  # none offloaded
        cost_usd=sum(m.cost_usd for m in group),
    )


@dataclass(frozen=True)
class ParetoChoice:
    """What the Pareto plot shows: the first phase with offloads, the conditions the edge
    believed in it (medians), the codecs its offloads used and the split it ran most."""

    phase: str
    conditions: Conditions
    codecs: tuple[str, ...]
    split_point: int
    objective: Objective


def pareto_choice(measurements: Sequence[Measurement],
                  phases: Sequence[Phase] = ()) -> ParetoChoice | None:
    """Read from the log (pure); None when nothing was offloaded."""
    for name, group in _groups(measurements, phases).items():
        offloads = [m for m in group if m.finished == "cloud"]
        if not offloads:
            continue
        first = offloads[0]
        try:
            objective = Objective(first.strategy, first.weight, first.edge)
        except InvalidArgument:  # slo or budget: their bound is not in the log
            objective = Objective("latency" if first.weight < 0.5 else "cost", first.weight,
                                  first.edge)
        return ParetoChoice(
            phase=name,
            conditions=Conditions(statistics.median(m.bandwidth_kbps for m in offloads),
                                  statistics.median(m.rtt_ms for m in offloads),
                                  statistics.median(m.clock_ghz for m in offloads)),
            codecs=tuple(sorted({m.codec for m in offloads})),
            split_point=Counter(m.split_point for m in offloads).most_common(1)[0][0],
            objective=objective)
    return None


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
                 profile: Profile | None = None) -> Path:
    """Plots and ``summary.md`` for the log in ``log_dir`` (into ``out_dir``, default
    ``LOG_DIR/report``); returns the summary's path. The Pareto plot needs the edge's profile:
    ``profile``, or ``edge-profile.json`` in the log's folder (a demo writes one)."""
    log_dir = Path(log_dir)
    out_dir = Path(out_dir or log_dir / "report")
    check_log(log_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    measurements = read_measurements(log_dir)
    phases = read_phases(log_dir)
    figures = [plots.timeline(measurements, phases, out_dir)]
    if profile is None and (log_dir / PROFILE_FILE).exists():
        profile = read_profile(log_dir / PROFILE_FILE)
    choice = pareto_choice(measurements, phases)
    if profile is not None and choice is not None:
        planner = cached_planner(profile.model, profile, choice.objective, codecs=choice.codecs)
        figures.append(plots.pareto(planner.plan(choice.conditions), choice, out_dir))
    lines = [f"# {title}", "", *_markdown(measurements, phases),
             *[f"![{f.stem}]({f.name})" for f in figures if f is not None], ""]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _markdown(measurements: Sequence[Measurement], phases: Sequence[Phase]) -> list[str]:
    in_cloud = sum(m.finished == "cloud" for m in measurements)
    lines = [f"{len(measurements)} inferences, {in_cloud} finished in the cloud, "
             f"{len(measurements) - in_cloud} on the edge (fallback or outage); none lost.", ""]
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
              f"| {percent(s.prediction_error)} | {s.cost_usd * 1e6:.3f} |"
              for s in summarise(measurements, phases)]
    return [*lines, ""]


def percent(error: float | None) -> str:
    """A prediction error as a percentage; a dash where nothing was offloaded to compare."""
    return "-" if error is None else f"{error:.0%}"
