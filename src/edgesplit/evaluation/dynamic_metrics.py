"""The dynamic suite's figures from its rows (pure: rows and oracle tables in, numbers out).

A replay is one chooser through one trace (one model, edge, objective and repeat). Its metrics:
latency (total, mean and p50/p95/p99), cost, regret against the oracle in hindsight in the same
replay group (mean per inference, since a slower chooser fits fewer inferences in the trace's
time), reaction time to each change (inferences and seconds until the split is among the best
three at the new conditions), split changes per minute, inferences lost, and probing: its bytes,
their share of everything the edge sent, and their price (0 at the thesis's prices, which charge
nothing per byte: probing then costs uplink time, not dollars).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesplit.core.cost import cost_usd, edge_mode, rates

FORMAT = "edgesplit-dynamic/1"
CHOOSERS = {"plan-once": "once", "replan": "replan", "every": "every", "interval": "interval"}
"""Each chooser's ``strategy`` value in runs.csv and its ``ReschedulePolicy`` mode."""
HINDSIGHT = "hindsight"


def key(condition: tuple[float, float, float, float, bool]) -> str:
    """One condition of a trace as the oracle's key (JSON of its values)."""
    return json.dumps(list(condition))


def oracle_table(entry: dict[str, Any], n: int, edge: str) -> tuple[list[float], list[float]]:
    """Latency and cost per split point from one condition's oracle entry (the cloud down:
    only the last split point, the whole model on the edge, finishes)."""
    if not entry["cloud_up"]:
        inf = float("inf")
        return [inf] * (n - 1) + [0.0], [inf] * (n - 1) + [0.0]
    rows = entry["splits"]
    latency = [float(r["latency_s"]) for r in rows]
    cost = [cost_usd(float(r["edge_s"]), float(r["cloud_s"]), int(r["sent_bytes"]),
                     edge_mode(edge)) for r in rows]
    return latency, cost


TOP = 3  # "within the best three for the new conditions"


def top_splits(latency: Sequence[float], cost: Sequence[float], objective: str,
               k: int = TOP) -> list[int]:
    """The ``k`` best split points for ``objective`` (OL: fastest, OC: cheapest, CL: the sum of
    min-max normalised latency and cost, as equal weights)."""
    def normalised(values: Sequence[float]) -> list[float]:
        finite = [v for v in values if math.isfinite(v)]
        low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
        span = high - low or 1.0
        return [(v - low) / span if math.isfinite(v) else math.inf for v in values]

    if objective == "OL":
        score = list(latency)
    elif objective == "OC":
        score = list(cost)
    else:
        score = [a + b for a, b in zip(normalised(latency), normalised(cost), strict=True)]
    finite = [i for i in range(len(score)) if math.isfinite(score[i])]
    return sorted(finite, key=score.__getitem__)[:k]


@dataclass(frozen=True)
class Change:
    """A change in the trace: when, how long its stretch lasts, and the new best splits."""

    t_s: float
    until_s: float
    best: frozenset[int]


def reactions(rows: Sequence[dict[str, Any]], changes: Sequence[Change]) -> list[tuple[int, float]]:
    """Per change: inferences before the first one whose split is among the new best (0: the
    first after the change already is) and seconds from the change to that one; a chooser that
    never gets there in the stretch counts all its inferences there and the stretch's length."""
    found = []
    for change in changes:
        inside = [r for r in rows if change.t_s <= r["t_s"] < change.until_s]
        hit = next((i for i, r in enumerate(inside) if r["split_point"] in change.best), None)
        if hit is None:
            found.append((len(inside), change.until_s - change.t_s))
        else:
            found.append((hit, inside[hit]["t_s"] - change.t_s))
    return found


def flaps_per_minute(rows: Sequence[dict[str, Any]], duration_s: float) -> float:
    splits = [r["split_point"] for r in rows if not r["lost"]]
    changes = sum(a != b for a, b in itertools.pairwise(splits))
    return changes / (duration_s / 60) if duration_s > 0 else 0.0


def replay_metrics(rows: Sequence[dict[str, Any]], changes: Sequence[Change],
                   duration_s: float, edge: str) -> dict[str, float]:
    """One replay's metrics (regret is added against the hindsight replay by ``with_regret``)."""
    done = [r for r in rows if not r["lost"]]
    latency = np.array([r["latency_s"] for r in done]) if done else np.array([math.nan])
    cost = sum(r["cost_usd"] for r in done)
    react = reactions(rows, changes)
    probe = sum(r["probe_bytes"] for r in rows)
    sent = sum(r["sent_bytes"] for r in done)
    return {
        "inferences": len(rows), "lost": sum(r["lost"] for r in rows),
        "total_latency_s": float(np.nansum(latency)), "mean_latency_s": float(np.mean(latency)),
        "p50_s": float(np.percentile(latency, 50)), "p95_s": float(np.percentile(latency, 95)),
        "p99_s": float(np.percentile(latency, 99)), "total_cost_usd": cost,
        "mean_cost_usd": cost / len(done) if done else math.nan,
        "reaction_inferences": float(np.mean([i for i, _ in react])) if react else 0.0,
        "reaction_max_inferences": float(max((i for i, _ in react), default=0)),
        "reaction_s": float(np.mean([s for _, s in react])) if react else 0.0,
        "flaps_per_min": flaps_per_minute(rows, duration_s),
        "probe_bytes": probe, "probe_cost_usd": probe * rates(edge_mode(edge))[2],
        "probe_share": probe / (probe + sent) if probe + sent else 0.0,
    }


def with_regret(metrics: dict[str, float], hindsight: dict[str, float]) -> dict[str, float]:
    """``metrics`` with the regret of its mean latency and cost against the hindsight's."""
    def regret(key: str) -> float:
        base = hindsight[key]
        return metrics[key] / base - 1 if base > 0 else math.nan

    return {**metrics, "latency_regret": regret("mean_latency_s"),
            "cost_regret": regret("mean_cost_usd")}
