"""The experiment's tables, from ``runs.csv`` rows alone. Pure: rows in, records out.

Definitions (every number of the report comes from these):

- A strategy's value in a setting is the median over repeats of its measured latency (or cost);
  the oracle's value of a split point in a setting is the median over repeats of that split
  point's measured latency (or cost, priced for the row's edge).
- Table 7.1: ``X_vs_Y = (sum over settings of X) / (sum over settings of Y) - 1``, in percent:
  positive means X takes longer (costs more) than Y over the experiment. Empty when Y sums to 0.
- Regret of a choice in a setting: (oracle value of the chosen split) / (best oracle value over
  all split points) - 1. Its rank is 1 + the number of split points strictly better; the shares
  are how often the rank is 1, at most 3, at most 5. The latency objective judges OL's choices,
  the cost objective OC's, both for the rented edge (OL's choice does not depend on the edge;
  an owned edge's cheapest split is all-on-edge by construction).
- Noise floor: the latency regret of choosing by one repeat of the oracle alone (see
  ``noise_floor``); a predictor's regret is judged against it.
- Consistency: each strategy row (an end-to-end inference at the chosen split) over the oracle's
  median at that split and setting; for a composed oracle this checks the composition.
- Pareto: a CL choice is on the measured front when no split point is measured both at least
  as fast and as cheap and strictly better in one (``core.policies.pareto_front``).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgesplit.core.policies import Strategy, pareto_front
from edgesplit.evaluation.runs import THESIS_LABELS

Row = Mapping[str, str]
OC, OL, CL = (THESIS_LABELS[s] for s in (Strategy.COST, Strategy.LATENCY, Strategy.RANK))
COMPARISONS = {"cost": ((CL, OC), (CL, OL), (OC, OL)),
               "latency": ((CL, OC), (CL, OL), (OL, OC))}
OBJECTIVES = {"latency": (OL, "latency_s"), "cost": (OC, "cost_usd")}
NOT_CHOSEN = ("oracle", "compressed-input")
"""Rows that no strategy chose: the oracle's forced splits and the raw input compressed and
sent whole (a baseline, judged in ``evidence``; at split 0 it is not the oracle's raw run)."""


def is_experiment(directory: Path) -> bool:
    return (directory / "runs.csv").is_file() and (directory / "config.json").is_file()


def thesis_figures() -> dict[str, Any]:
    """The thesis's reported figures (``edgesplit/data/thesis_figures.json``)."""
    text = resources.files("edgesplit").joinpath("data", "thesis_figures.json").read_text()
    figures: dict[str, Any] = json.loads(text)
    return figures


@dataclass(frozen=True)
class Strategies:
    """Per (model, edge, predictor, strategy, setting): medians and the chosen split."""

    latency: dict[tuple[str, str, str, str, int], float]
    cost: dict[tuple[str, str, str, str, int], float]
    split: dict[tuple[str, str, str, str, int], int]


@dataclass(frozen=True)
class Oracle:
    """Per (model, edge, setting): the median latency and cost of every split point."""

    latency: dict[tuple[str, str, int], dict[int, float]]
    cost: dict[tuple[str, str, int], dict[int, float]]


def strategies(rows: Iterable[Row]) -> Strategies:
    groups: dict[tuple[str, str, str, str, int], list[Row]] = defaultdict(list)
    for r in rows:
        if r["strategy"] not in NOT_CHOSEN:
            groups[(r["model"], r["edge"], r["predictor"], r["strategy"], int(r["setting"]))
                   ].append(r)
    return Strategies(
        {k: statistics.median(float(r["latency_s"]) for r in g) for k, g in groups.items()},
        {k: statistics.median(float(r["cost_usd"]) for r in g) for k, g in groups.items()},
        {k: Counter(int(r["split_point"]) for r in g).most_common(1)[0][0]
         for k, g in groups.items()})


def oracle(rows: Iterable[Row]) -> Oracle:
    groups: dict[tuple[str, str, int], dict[int, list[Row]]] = defaultdict(
        lambda: defaultdict(list))
    for r in rows:
        if r["strategy"] == "oracle":
            groups[(r["model"], r["edge"], int(r["setting"]))][int(r["split_point"])].append(r)
    latency = {k: {sp: statistics.median(float(r["latency_s"]) for r in g)
                   for sp, g in by_sp.items()} for k, by_sp in groups.items()}
    cost = {k: {sp: statistics.median(float(r["cost_usd"]) for r in g)
                for sp, g in by_sp.items()} for k, by_sp in groups.items()}
    return Oracle(latency, cost)


@dataclass(frozen=True)
class Comparison:
    model: str
    edge: str
    predictor: str
    metric: str
    comparison: str
    measured_pct: float | None
    thesis_pct: float | None


def table_7_1(s: Strategies, thesis: Mapping[str, Any] | None = None) -> list[Comparison]:
    thesis = thesis or {}
    out = []
    for model, edge, predictor in sorted({k[:3] for k in s.latency}):
        for metric, pairs in COMPARISONS.items():
            values = s.latency if metric == "latency" else s.cost
            for x, y in pairs:
                sx = sum(v for k, v in values.items() if k[:4] == (model, edge, predictor, x))
                sy = sum(v for k, v in values.items() if k[:4] == (model, edge, predictor, y))
                name = f"{x}_vs_{y}"
                theirs = thesis.get(model, {}).get(edge, {}).get(metric, {}).get(name)
                out.append(Comparison(model, edge, predictor, metric, name,
                                      round((sx / sy - 1) * 100, 2) if sy else None, theirs))
    return out


@dataclass(frozen=True)
class Effectiveness:
    model: str
    predictor: str
    objective: str
    settings: int
    mean_regret: float
    worst_regret: float
    best_share: float
    top3_share: float
    top5_share: float
    noise_floor: float | None
    thesis_mean_regret: float | None
    thesis_top5_share: float | None


def noise_floor(rows: Iterable[Row], o: Oracle) -> dict[str, float]:
    """Per model, the mean latency regret of choosing, in each setting and repeat, the split
    that was fastest in that one repeat of the oracle: what measurement noise alone costs a
    choice that knew the truth up to noise. Regrets near it are as good as this testbed can
    tell apart."""
    by_repeat: dict[tuple[str, int, int], dict[int, float]] = defaultdict(dict)
    for r in rows:
        if r["strategy"] == "oracle" and r["edge"] == "rent":
            by_repeat[(r["model"], int(r["setting"]), int(r["repeat"]))][
                int(r["split_point"])] = float(r["latency_s"])
    regrets: dict[str, list[float]] = defaultdict(list)
    for (model, setting, _), values in sorted(by_repeat.items()):
        if len(values) > 1:
            chosen = min(values, key=lambda sp: (values[sp], sp))
            regrets[model].append(regret_and_rank(o.latency[(model, "rent", setting)],
                                                  chosen)[0])
    return {model: round(statistics.mean(v), 4) for model, v in regrets.items()}


def regret_and_rank(values: Mapping[int, float], chosen: int) -> tuple[float, int]:
    best = min(values.values())
    regret = values[chosen] / best - 1 if best > 0 else (0.0 if values[chosen] == 0 else
                                                          float("inf"))
    return regret, 1 + sum(v < values[chosen] for v in values.values())


def effectiveness(s: Strategies, o: Oracle, thesis: Mapping[str, Any] | None = None,
                  floor: Mapping[str, float] | None = None) -> list[Effectiveness]:
    figures, floor = (thesis or {}), (floor or {})
    deficit = figures.get("latency_deficit_vs_optimal_pct", {})
    top5 = figures.get("share_in_best_5_pct", {})
    out = []
    for model, predictor in sorted({(k[0], k[2]) for k in s.split}):
        for objective, (strategy, _) in OBJECTIVES.items():
            table = o.latency if objective == "latency" else o.cost
            scored = [regret_and_rank(table[(model, "rent", k[4])], chosen)
                      for k, chosen in sorted(s.split.items())
                      if k[:4] == (model, "rent", predictor, strategy)
                      and (model, "rent", k[4]) in table]
            if not scored:
                continue
            regrets, ranks = [r for r, _ in scored], [k for _, k in scored]
            ours = predictor == "thesis" and objective == "latency"
            out.append(Effectiveness(
                model, predictor, objective, len(scored), round(statistics.mean(regrets), 4),
                round(max(regrets), 4), _share(ranks, 1), _share(ranks, 3), _share(ranks, 5),
                floor.get(model) if objective == "latency" else None,
                round(deficit[model] / 100, 4) if ours and model in deficit else None,
                round(top5[model] / 100, 4) if ours and model in top5 else None))
    return out


def _share(ranks: Sequence[float], within: float) -> float:
    return round(sum(r <= within for r in ranks) / len(ranks), 4)


@dataclass(frozen=True)
class ParetoCheck:
    model: str
    edge: str
    setting: int
    predictor: str
    cl_split: int
    on_front: bool
    front: str


def pareto_checks(s: Strategies, o: Oracle) -> list[ParetoCheck]:
    out = []
    for (model, edge, predictor, strategy, setting), chosen in sorted(s.split.items()):
        key = (model, edge, setting)
        if strategy != CL or key not in o.latency:
            continue
        sps = sorted(o.latency[key])
        front = pareto_front([o.latency[key][sp] for sp in sps], [o.cost[key][sp] for sp in sps])
        on = {sps[i] for i in front}
        out.append(ParetoCheck(model, edge, setting, predictor, chosen, chosen in on,
                               " ".join(str(sps[i]) for i in front)))
    return out


@dataclass(frozen=True)
class Consistency:
    """The oracle against the strategies' own end-to-end runs at the same split and setting:
    ``ratio`` = a strategy row's latency / the oracle's median there. For a model whose oracle
    is composed from parts this checks the composition; otherwise, repeatability."""

    model: str
    method: str
    pairs: int
    median_ratio: float
    within_10pct: float


def consistency(rows: Sequence[Row], o: Oracle) -> list[Consistency]:
    methods = {r["model"]: r["method"] for r in rows if r["strategy"] == "oracle"}
    ratios: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        key = (r["model"], "rent", int(r["setting"]))
        if r["strategy"] not in NOT_CHOSEN and key in o.latency:
            ratios[r["model"]].append(float(r["latency_s"])
                                      / o.latency[key][int(r["split_point"])])
    return [Consistency(model, methods[model], len(values),
                        round(statistics.median(values), 4),
                        _share([abs(v - 1) for v in values], 0.1))
            for model, values in sorted(ratios.items())]


def as_dicts(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]
