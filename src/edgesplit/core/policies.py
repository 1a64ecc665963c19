"""Choosing a split point from predicted latency and cost per split point (pure).

Every function takes two equally long sequences, ``latency[sp]`` and ``cost[sp]``, and returns
split points. The weight ``w`` runs from 0 (latency only) to 1 (cost only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from edgesplit.errors import InvalidArgument


class Strategy(StrEnum):
    LATENCY = "latency"  # fastest
    COST = "cost"  # cheapest
    RANK = "rank"  # the thesis's Algorithm 1
    WEIGHTED = "weighted"  # min-max normalised weighted sum over the Pareto front
    SLO = "slo"  # cheapest that meets a deadline
    BUDGET = "budget"  # fastest within a cost cap


def strategy(value: str) -> Strategy:
    try:
        return Strategy(value)
    except ValueError:
        raise InvalidArgument(
            f"unknown strategy {value!r}: expected one of {', '.join(s.value for s in Strategy)}"
        ) from None


@dataclass(frozen=True, slots=True)
class Choice:
    """A chosen split point; ``constraint_met`` is False when no split met the deadline/budget."""

    split_point: int
    constraint_met: bool = True


def fastest(latency: Sequence[float], cost: Sequence[float], margin: float = 0.0) -> int:
    """Lowest latency; ties go to the cheaper, then the earlier split point.

    Noise-aware with ``margin`` > 0: a split point is faster than another only where its
    predicted advantage exceeds ``margin`` times the fastest latency (the prediction's relative
    uncertainty); among those the fastest cannot be told from, the cheapest is kept.
    """
    best = min(range(len(latency)), key=lambda sp: (latency[sp], cost[sp], sp))
    if margin <= 0:
        return best
    limit = latency[best] * (1 + margin)
    return min((sp for sp in range(len(latency)) if latency[sp] <= limit),
               key=lambda sp: (cost[sp], latency[sp], sp))


def cheapest(latency: Sequence[float], cost: Sequence[float]) -> int:
    """Lowest cost; ties go to the faster, then the earlier split point."""
    return min(range(len(latency)), key=lambda sp: (cost[sp], latency[sp], sp))


def pareto_front(latency: Sequence[float], cost: Sequence[float]) -> tuple[int, ...]:
    """Split points no other split point beats on both latency and cost, fastest first.

    A point is dominated when another is at least as fast and as cheap and strictly better in
    one; equal twins are both kept.
    """
    # Sorting tuples compares in C: much faster than a key function, and planning is hot.
    order = sorted(zip(latency, cost, range(len(latency)), strict=True))
    front: list[int] = []
    best_cost_before = math.inf  # cheapest among strictly faster points
    group_latency = group_best = math.nan
    for lat, cst, sp in order:
        if lat != group_latency:  # a new latency; the first of it is its cheapest
            if group_best < best_cost_before:
                best_cost_before = group_best
            group_latency, group_best = lat, cst
        if cst == group_best and cst < best_cost_before:
            front.append(sp)
    return tuple(front)


def rank_advantage(n: int, weight: float) -> int:
    """``k = round(n * |w - 0.5| * 2)``, halves rounded up (w = 0.55, n = 20 gives 2)."""
    return math.floor(n * abs(weight - 0.5) * 2 + 0.5 + 1e-9)


def rank_choice(latency: Sequence[float], cost: Sequence[float], weight: float) -> int:
    """The thesis's Algorithm 1, as docs/design.md section 4 reads it.

    Sort fastest-first (``L``) and cheapest-first (``C``). The favoured objective's list (cost
    when ``w > 0.5``) is read up to step ``i`` and the other up to ``i + k``; the first split point
    in both read prefixes wins; at a tie the one first in the favoured list (for ``w = 0.5``: the
    lower rank sum, then the lower latency). A split point enters both prefixes at step
    ``max(favoured rank, other rank - k)``, so the walk is one pass.
    """
    n = len(latency)
    by_latency = [sp for _, _, sp in sorted(zip(latency, cost, range(n), strict=True))]
    by_cost = [sp for _, _, sp in sorted(zip(cost, latency, range(n), strict=True))]
    favoured, other = (by_cost, by_latency) if weight > 0.5 else (by_latency, by_cost)
    k = rank_advantage(n, weight)
    favoured_rank = [0] * n
    other_rank = [0] * n
    for r in range(n):
        favoured_rank[favoured[r]] = r
        other_rank[other[r]] = r
    found_at = [max(f, o - k) for f, o in zip(favoured_rank, other_rank, strict=True)]
    if weight == 0.5:
        return min(range(n), key=lambda sp: (found_at[sp], favoured_rank[sp] + other_rank[sp],
                                             latency[sp], sp))
    return min(range(n), key=lambda sp: (found_at[sp], favoured_rank[sp]))


def weighted_choice(latency: Sequence[float], cost: Sequence[float], weight: float) -> int:
    """Minimise ``(1 - w) * latency' + w * cost'`` over the Pareto front, each min-max scaled."""
    front = pareto_front(latency, cost)
    lat_low, lat_high = latency[front[0]], latency[front[-1]]
    cost_low, cost_high = cost[front[-1]], cost[front[0]]
    lat_span = (lat_high - lat_low) or 1.0
    cost_span = (cost_high - cost_low) or 1.0
    return min(front, key=lambda sp: ((1 - weight) * (latency[sp] - lat_low) / lat_span
                                      + weight * (cost[sp] - cost_low) / cost_span,
                                      latency[sp], sp))


def slo_choice(latency: Sequence[float], cost: Sequence[float], deadline_s: float) -> Choice:
    """Cheapest split whose latency meets the deadline; else the fastest, flagged."""
    meeting = [sp for sp in range(len(latency)) if latency[sp] <= deadline_s]
    if not meeting:
        return Choice(fastest(latency, cost), constraint_met=False)
    return Choice(min(meeting, key=lambda sp: (cost[sp], latency[sp], sp)))


def budget_choice(latency: Sequence[float], cost: Sequence[float], max_cost: float) -> Choice:
    """Fastest split whose cost is within the cap; else the cheapest, flagged."""
    within = [sp for sp in range(len(latency)) if cost[sp] <= max_cost]
    if not within:
        return Choice(cheapest(latency, cost), constraint_met=False)
    return Choice(min(within, key=lambda sp: (latency[sp], cost[sp], sp)))


@dataclass(frozen=True, slots=True)
class Limits:
    """What a strategy may be given beside the two vectors (checked by ``Objective``)."""

    weight: float = 0.5
    deadline_s: float | None = None
    max_cost_usd: float | None = None
    margin: float = 0.0


@dataclass(frozen=True, slots=True)
class StrategyRule:
    """How a strategy chooses and, for a constrained one, the limit it needs: the ``Objective``
    field, what it is called, and what the plan says when no split meets it."""

    choose: Callable[[Sequence[float], Sequence[float], Limits], Choice]
    needs: str | None = None  # "deadline_ms" or "max_cost_usd"
    needs_what: str = ""
    unmet: str = ""


def _deadline(limits: Limits) -> float:
    assert limits.deadline_s is not None
    return limits.deadline_s


def _budget(limits: Limits) -> float:
    assert limits.max_cost_usd is not None
    return limits.max_cost_usd


STRATEGIES: dict[Strategy, StrategyRule] = {
    Strategy.LATENCY: StrategyRule(lambda lat, cost, lim: Choice(fastest(lat, cost, lim.margin))),
    Strategy.COST: StrategyRule(lambda lat, cost, _: Choice(cheapest(lat, cost))),
    Strategy.RANK: StrategyRule(lambda lat, cost, lim: Choice(rank_choice(lat, cost, lim.weight))),
    Strategy.WEIGHTED: StrategyRule(
        lambda lat, cost, lim: Choice(weighted_choice(lat, cost, lim.weight))),
    Strategy.SLO: StrategyRule(
        lambda lat, cost, lim: slo_choice(lat, cost, _deadline(lim)), needs="deadline_ms",
        needs_what="a deadline",
        unmet="no split meets the deadline: the fastest"),
    Strategy.BUDGET: StrategyRule(
        lambda lat, cost, lim: budget_choice(lat, cost, _budget(lim)), needs="max_cost_usd",
        needs_what="a cost cap",
        unmet="no split within the budget: the cheapest"),
}
"""The registry: a new strategy is a ``Strategy`` member and its rule here."""


def choose(strategy: Strategy, latency: Sequence[float], cost: Sequence[float], *,
           weight: float = 0.5, deadline_s: float | None = None,
           max_cost_usd: float | None = None, margin: float = 0.0) -> Choice:
    """Apply ``strategy``; arguments are checked by ``Objective`` before they get here."""
    return STRATEGIES[strategy].choose(latency, cost, Limits(weight, deadline_s, max_cost_usd,
                                                              margin))
