"""From a fitted predictor and live conditions to a split plan: the candidates table and a choice.

Pure: a ``Planner`` holds a fitted predictor and an ``Objective`` (strategy, weight, edge mode,
prices, deadline or budget, checked once); ``plan(conditions)`` predicts every split point, prices
it, applies the policy and returns a ``SplitPlan`` with the Pareto front. No I/O, no clocks.

>>> from edgesplit.core.planning import Objective
>>> Objective(strategy="slo").deadline_s
Traceback (most recent call last):
...
edgesplit.errors.MissingLimit: strategy 'slo' needs a deadline: give deadline_ms
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from edgesplit.core.cost import EdgeMode, Prices, cost_vector, edge_mode
from edgesplit.core.policies import STRATEGIES, Strategy, choose, pareto_front
from edgesplit.core.policies import strategy as strategy_named
from edgesplit.core.predictors import Conditions, Prediction, Predictor
from edgesplit.errors import InvalidArgument, MissingLimit


@dataclass(frozen=True, slots=True, init=False)
class Objective:
    """What the user wants: a strategy, a weight (0 latency only .. 1 cost only) and prices.

    The strategy and the edge mode may be given by name (``Objective("rank", 0.5, "rent")``).
    ``margin`` makes the latency strategy noise-aware (``policies.fastest``): the relative
    uncertainty of a prediction, 0 (the default) for the plain fastest.
    """

    strategy: Strategy
    weight: float
    edge: EdgeMode
    prices: Prices
    deadline_ms: float | None
    max_cost_usd: float | None
    margin: float

    def __init__(self, strategy: Strategy | str = Strategy.RANK, weight: float = 0.5,
                 edge: EdgeMode | str = EdgeMode.OWN, prices: Prices | None = None,
                 deadline_ms: float | None = None, max_cost_usd: float | None = None,
                 margin: float = 0.0) -> None:
        values = {"strategy": strategy_named(str(strategy)), "weight": weight,
                  "edge": edge_mode(str(edge)), "prices": Prices() if prices is None else prices,
                  "deadline_ms": deadline_ms, "max_cost_usd": max_cost_usd, "margin": margin}
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        if not isinstance(self.weight, int | float) or not 0 <= self.weight <= 1:
            raise InvalidArgument(f"weight must be between 0 and 1, got {self.weight!r}")
        if not isinstance(self.margin, int | float) or not 0 <= self.margin < 1:
            raise InvalidArgument(f"margin must be at least 0 and below 1, got {self.margin!r}")
        rule = STRATEGIES[self.strategy]
        if rule.needs is not None and getattr(self, rule.needs) is None:
            raise MissingLimit(f"strategy '{self.strategy}' needs {rule.needs_what}: give "
                               f"{rule.needs}", rule.needs)
        for name in ("deadline_ms", "max_cost_usd"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise InvalidArgument(f"{name} must be a positive number, got {value!r}")

    @property
    def deadline_s(self) -> float | None:
        return None if self.deadline_ms is None else self.deadline_ms / 1000


class Candidate(NamedTuple):
    """One row of the candidates table: what splitting after ``layer`` is predicted to give."""

    split_point: int
    layer: str
    edge_s: float
    comm_s: float
    cloud_s: float
    latency_s: float
    cost_usd: float
    offload_bytes: int
    codec: str

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """The chosen split point, the candidates table, and the Pareto front (fastest first).

    The table is kept as columns (one tuple per quantity, indexed by split point), which is what
    the planner computes; ``candidates`` and ``chosen`` give it as rows.
    """

    model: str
    objective: Objective
    conditions: Conditions
    split_point: int
    layers: tuple[str, ...]
    prediction: Prediction
    latency_s: tuple[float, ...]
    cost_usd: tuple[float, ...]
    pareto: tuple[int, ...]
    constraint_met: bool = True

    def candidate(self, split_point: int) -> Candidate:
        p = self.prediction
        return Candidate(split_point, self.layers[split_point], p.edge_s[split_point],
                         p.comm_s[split_point], p.cloud_s[split_point],
                         self.latency_s[split_point], self.cost_usd[split_point],
                         p.offload_bytes[split_point], p.codec[split_point])

    @property
    def codec(self) -> str:
        return self.prediction.codec[self.split_point]

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return tuple(self.candidate(sp) for sp in range(len(self.latency_s)))

    @property
    def chosen(self) -> Candidate:
        return self.candidate(self.split_point)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``edgesplit plan --json``."""
        chosen = self.chosen.to_dict()
        del chosen["split_point"], chosen["layer"], chosen["codec"]
        return {
            "model": self.model,
            "strategy": str(self.objective.strategy),
            "weight": self.objective.weight,
            "edge": str(self.objective.edge),
            "conditions": {
                "bandwidth_kbps": self.conditions.bandwidth_kbps,
                "rtt_ms": self.conditions.rtt_ms,
                "clock_ghz": self.conditions.clock_ghz,
            },
            "split_point": self.split_point,
            "layer": self.layers[self.split_point],
            "codec": self.codec,
            "predicted": chosen,
            "constraint_met": self.constraint_met,
            "deadline_ms": self.objective.deadline_ms,
            "max_cost_usd": self.objective.max_cost_usd,
            "candidates": [c.to_dict() for c in self.candidates],
            "pareto": list(self.pareto),
        }


class Planner:
    """Plans one model: a fitted predictor, its layer names, an objective and allowed codecs.

    With several codecs, each split point gets the codec that makes it fastest (a codec changes
    only the bytes sent and the time to encode them, so the fastest is also the cheapest or near
    it), and the policy then chooses among split points. ``exclude`` removes (split point, codec)
    pairs, e.g. a lossy codec that changed the model's answer there.
    """

    def __init__(self, model: str, layers: Sequence[str], predictor: Predictor,
                 objective: Objective, codecs: Sequence[str] = ("raw",)) -> None:
        if not codecs:
            raise InvalidArgument("give at least one codec")
        self.model = model
        self.layers = ("input", *layers)
        self.predictor = predictor
        self.objective = objective
        self.codecs = tuple(codecs)

    def plan(self, conditions: Conditions,
             exclude: frozenset[tuple[int, str]] = frozenset()) -> SplitPlan:
        if len(self.codecs) == 1 and not exclude:
            prediction = self.predictor.predict(conditions, self.codecs[0])
        else:
            prediction = fastest_codecs([self.predictor.predict(conditions, codec)
                                         for codec in self.codecs], exclude)
        return plan_prediction(self.model, self.layers, prediction, conditions, self.objective)


def fastest_codecs(predictions: Sequence[Prediction],
                   exclude: frozenset[tuple[int, str]] = frozenset()) -> Prediction:
    """One prediction taking, at each split point, the fastest codec not excluded there."""
    rows = []
    for sp in range(len(predictions[0].edge_s)):
        allowed = [p for p in predictions if (sp, p.codec[sp]) not in exclude]
        if not allowed:
            raise InvalidArgument(f"every codec is excluded at split point {sp}")
        best = min(allowed, key=lambda p: p.edge_s[sp] + p.comm_s[sp] + p.cloud_s[sp])
        rows.append((best.edge_s[sp], best.comm_s[sp], best.cloud_s[sp], best.offload_bytes[sp],
                     best.codec[sp]))
    edge, comm, cloud, sent, codec = zip(*rows, strict=True)
    return Prediction(edge, comm, cloud, sent, codec)


def plan_prediction(model: str, layers: tuple[str, ...], prediction: Prediction,
                    conditions: Conditions, objective: Objective) -> SplitPlan:
    """Price every split point of ``prediction`` and choose one by ``objective``.

    ``layers`` names split points 0..N ("input" first).
    """
    edge, cloud = prediction.edge_s, prediction.cloud_s
    latency = prediction.latency_s
    cost = cost_vector(edge, cloud, prediction.offload_bytes, objective.edge, objective.prices)
    choice = choose(objective.strategy, latency, cost, weight=objective.weight,
                    deadline_s=objective.deadline_s, max_cost_usd=objective.max_cost_usd,
                    margin=objective.margin)
    return SplitPlan(model, objective, conditions, choice.split_point, layers, prediction,
                     latency, cost, pareto_front(latency, cost), choice.constraint_met)
