"""Reports from a measurement log: a markdown summary and PNG plots.

``summarise`` and ``pareto_choice`` are pure (measurements and phases in, one summary row per
phase or what the Pareto plot shows out); ``build_report`` reads the log, draws the plots
(``plots``, matplotlib) and writes ``summary.md`` into a folder of its own.
A *phase* is a stretch of time with known true conditions (the demo's scenario, or one
experiment setting); without phases the whole log is one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgesplit.core import zoo
from edgesplit.core.planning import Objective, SplitPlan
from edgesplit.core.predictors import Conditions
from edgesplit.core.profiles import Profile
from edgesplit.core.rescheduling import ReschedulePolicy, with_hysteresis
from edgesplit.edge.measurements import (
    MEASUREMENTS_FILE,
    Measurement,
    MeasurementColumns,
    check_log,
    read_columns,
)
from edgesplit.errors import InvalidArgument
from edgesplit.evaluation import plots
from edgesplit.measuring.store import cached_planner, read_profile

PHASES_FILE = "phases.json"
REPORT_COLUMNS = ("time", "run", "model", "finished", "fallback", "replan", "strategy", "weight",
                  "edge", "codec", "split_point", "bandwidth_kbps", "rtt_ms", "clock_ghz",
                  "latency_s", "predicted_latency_s", "predicted_cost_usd", "cost_usd", "edge_s",
                  "comm_s", "cloud_s")
"""What the summary and the plots read, and the latency's parts (checked too): a log has 33."""
PROFILE_FILE = "edge-profile.json"  # the edge's profile, beside its log
OUTSIDE = "outside the phases"  # the summary row of measurements no phase covers
# How the edge words its fallbacks (edge/runtime.py, edge/client.py): read to tell them apart.
OFFLINE_PREFIX = "offline: "
TIMEOUT_TEXT = "did not answer within"


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
    note: str = ""  # what the phase is, where its name does not say (the summary shows it)


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


Log = Sequence[Measurement] | MeasurementColumns


def summarise(measurements: Log, phases: Sequence[Phase] = ()) -> list[PhaseSummary]:
    """One summary per phase, and one more for the measurements outside every phase if there
    are any: the rows always add up to the whole log."""
    log = _columns(measurements)
    return [_summary(name, log.take(which)) for name, which in _groups(log, phases).items()]


def _columns(measurements: Log) -> MeasurementColumns:
    if isinstance(measurements, MeasurementColumns):
        return measurements
    return MeasurementColumns.of(measurements)


def _groups(log: MeasurementColumns, phases: Sequence[Phase]) -> dict[str, np.ndarray]:
    """Which rows belong to each phase, or to each run of the runtime when there are no
    phases (boolean masks; ISO 8601 times of one zone compare as text)."""
    time = log["time"]
    if phases:
        groups = {p.name: (time >= p.start) & (time < p.end) for p in phases}
        outside = ~np.logical_or.reduce(list(groups.values()))
        return {**groups, OUTSIDE: outside} if outside.any() else groups
    return {f"run {run}": log["run"] == run for run in dict.fromkeys(log["run"].tolist())}


def _summary(name: str, group: MeasurementColumns) -> PhaseSummary:
    if not len(group):
        return PhaseSummary(name, 0, 0, 0, "", "", 0.0, 0.0, None, 0.0)
    offloads = group.take(group["finished"] == "cloud")
    measured = offloads["latency_s"]
    timed = measured > 0
    errors = np.abs(offloads["predicted_latency_s"][timed] - measured[timed]) / measured[timed]
    return PhaseSummary(
        phase=name,
        inferences=len(group),
        in_cloud=len(offloads),
        on_edge=len(group) - len(offloads),
        split_points=_most_used(group["split_point"].tolist()),
        codecs=_most_used(offloads["codec"].tolist()),
        median_latency_s=float(np.median(group["latency_s"])),
        median_predicted_s=float(np.median(group["predicted_latency_s"])),
        prediction_error=float(np.median(errors)) if len(errors) else None,  # none offloaded
        cost_usd=float(group["cost_usd"].sum()),
    )


@dataclass(frozen=True)
class EdgePrediction:
    """What the edge itself predicted for a split it ran (medians over its offloads there)."""

    split_point: int
    latency_s: float
    cost_usd: float
    count: int


@dataclass(frozen=True)
class ParetoChoice:
    """What the Pareto plot shows: the first phase with at least ``MIN_OFFLOADS`` offloads (or
    with any), the conditions the edge believed in it (medians), the codecs its offloads used,
    the split it ran most and what the edge predicted for each split it ran."""

    phase: str
    conditions: Conditions
    codecs: tuple[str, ...]
    split_point: int
    objective: Objective
    edge_predictions: tuple[EdgePrediction, ...] = ()


MIN_OFFLOADS = 3  # fewer are too few to take the medians of (a demo's start-up has one)


def pareto_choice(measurements: Log, phases: Sequence[Phase] = ()) -> ParetoChoice | None:
    """Read from the log (pure); None when nothing was offloaded."""
    log = _columns(measurements)
    cloud = log["finished"] == "cloud"
    groups = {name: which & cloud for name, which in _groups(log, phases).items()}
    counts = {name: int(which.sum()) for name, which in groups.items()}
    name = next((n for n, count in counts.items() if count >= MIN_OFFLOADS),
                next((n for n, count in counts.items() if count), None))
    if name is None:
        return None
    offloads = log.take(groups[name])
    strategy, weight = str(offloads["strategy"][0]), float(offloads["weight"][0])
    edge = str(offloads["edge"][0])
    try:
        objective = Objective(strategy, weight, edge)
    except InvalidArgument:  # slo or budget: their bound is not in the log
        objective = Objective("latency" if weight < 0.5 else "cost", weight, edge)
    splits = offloads["split_point"]
    return ParetoChoice(
        phase=name,
        conditions=Conditions(*(float(np.median(offloads[column])) for column in
                                ("bandwidth_kbps", "rtt_ms", "clock_ghz"))),
        codecs=tuple(sorted(set(offloads["codec"].tolist()))),
        split_point=Counter(splits.tolist()).most_common(1)[0][0],
        objective=objective,
        edge_predictions=tuple(
            EdgePrediction(int(sp), float(np.median(offloads["predicted_latency_s"][ran])),
                           float(np.median(offloads["predicted_cost_usd"][ran])),
                           int(ran.sum()))
            for sp in np.unique(splits) for ran in [splits == sp]))


def off_front_reason(plan: SplitPlan, split_point: int,
                     hysteresis: float = ReschedulePolicy().hysteresis) -> str:
    """Why the edge ran ``split_point`` though ``plan`` (the profile's predictions, the
    conditions the edge believed) puts it off the Pareto front; empty when it is on it."""
    if split_point in plan.pareto:
        return ""
    if with_hysteresis(plan, split_point, hysteresis).split_point == split_point:
        return (f"split {split_point} is off this front, but hysteresis kept it: the best "
                f"here, split {plan.split_point}, is not {hysteresis:.0%} faster or cheaper")
    return (f"split {split_point} is off this front (the profile's predictions, an idle "
            "cloud): the edge planned with what it had learned by then and the wait the cloud "
            "reported (its own predictions: x), under the conditions of that moment, and keeps "
            "a plan until its timer or a change")


def outcome(m: Measurement, previous: Measurement | None = None) -> str:
    """What became of one inference, to mark on the timeline: ``"offloaded"``, ``"resumed"``
    (the first offload after inferences the edge finished: the edge retried the cloud and it
    answered), ``"timed out"`` (the cloud missed the deadline, the edge finished it: the
    deadline plus the rest of the network, hence a spike), ``"fell back"`` (the cloud refused
    or could not be reached) or ``"offline"`` (the edge knew the cloud was down: not tried)."""
    rows = [m] if previous is None else [previous, m]
    return str(outcomes(MeasurementColumns.of(rows))[-1])


def outcomes(log: MeasurementColumns) -> np.ndarray:
    """``outcome`` of each row of ``log``, each after the row before it (the first after none)."""
    fallback = log["fallback"]
    kinds = {text: "offline" if text.startswith(OFFLINE_PREFIX) else
             "timed out" if TIMEOUT_TEXT in text else "fell back"
             for text in set(fallback.tolist())}  # a few distinct texts: each read once
    out = np.array([kinds[text] for text in fallback.tolist()], dtype=object)
    cloud = log["finished"] == "cloud"
    after_edge = np.concatenate(([False], ~cloud[:-1]))
    out[cloud] = "offloaded"
    out[cloud & after_edge] = "resumed"
    return out


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
                 profile: Profile | None = None,
                 warn: Callable[[str], None] = lambda _: None) -> Path:
    """Plots and ``summary.md`` for the log in ``log_dir`` (into ``out_dir``, default
    ``LOG_DIR/report``); returns the summary's path. The Pareto plot needs the edge's profile:
    ``profile``, or ``edge-profile.json`` in the log's folder (a demo writes one). Rows with an
    impossible number are left out, said once through ``warn`` and in ``summary.md``."""
    log_dir = Path(log_dir)
    out_dir = Path(out_dir or log_dir / "report")
    check_log(log_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    measurements = read_columns(log_dir, REPORT_COLUMNS)
    if measurements.impossible:
        warn(f"left out {_plural(measurements.impossible, 'row')} of "
             f"{log_dir / MEASUREMENTS_FILE} with an impossible number (NaN, infinite or "
             f"negative; first at "
             f"{measurements.first_impossible}): the file was damaged or edited")
    phases = read_phases(log_dir)
    figures = [plots.timeline(measurements, phases, out_dir)]
    if profile is None and (log_dir / PROFILE_FILE).exists():
        profile = read_profile(log_dir / PROFILE_FILE)
    choice = pareto_choice(measurements, phases)
    if profile is not None and choice is not None:
        planner = cached_planner(profile.model, profile, choice.objective, codecs=choice.codecs)
        plan = planner.plan(choice.conditions)
        figures.append(plots.pareto(plan, choice, off_front_reason(plan, choice.split_point),
                                    out_dir))
    left_out = [f"**{_plural(measurements.impossible, 'row')} left out** for an impossible "
                f"number (first at {measurements.first_impossible}).", ""] \
        if measurements.impossible else []
    notes = [zoo.synthetic_note(name) for name in sorted(set(measurements["model"].tolist()))
             if name in zoo.MODELS]
    lines = [f"# {title}", "", *left_out, *[f"{note}\n" for note in notes if note],
             *_markdown(measurements, phases),
             *[f"![{f.stem}]({f.name})" for f in figures if f is not None], ""]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _markdown(measurements: MeasurementColumns, phases: Sequence[Phase]) -> list[str]:
    in_cloud = int((measurements["finished"] == "cloud").sum())
    lines = [f"{len(measurements)} inferences, {in_cloud} finished in the cloud, "
             f"{len(measurements) - in_cloud} on the edge (fallback or outage); none lost.", ""]
    if phases:
        lines += ["| phase | true conditions |", "|---|---|"]
        lines += [f"| {p.name} | {p.bandwidth_kbps:g} kbit/s, RTT {p.rtt_ms:g} ms, "
                  f"{p.clock_ghz:g} GHz{'' if p.cloud_up else ', cloud down'}"
                  f"{f' ({p.note})' if p.note else ''} |" for p in phases]
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
