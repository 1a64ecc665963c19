"""When to re-plan, and when a new plan is worth switching to (pure; the clock is passed in).

The edge re-plans on a timer and whenever a condition moves past a threshold since the last plan.
A new split point replaces the current one only if it is better by more than the hysteresis in
latency or in cost, so two near-equal splits do not flap on measurement noise; the noisier the
edge's measured transfer times, the larger that hysteresis (``noise_hysteresis``).

``mode`` picks the chooser (the dynamic suite compares them on the same trace): ``replan`` is
the above; ``once`` plans at the first inference and never again; ``every`` re-plans at every
inference and switches on any gain (no hysteresis); ``interval`` re-plans on the timer only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgesplit.core.planning import SplitPlan
from edgesplit.core.predictors import Conditions
from edgesplit.errors import InvalidArgument

MODES = ("replan", "once", "every", "interval")


@dataclass(frozen=True)
class ReschedulePolicy:
    """Thresholds: re-plan every ``interval_s`` or when a condition moves this much."""

    interval_s: float = 10.0
    bandwidth_change: float = 0.2  # relative
    rtt_change_ms: float = 20.0  # absolute
    clock_change: float = 0.1  # relative
    hysteresis: float = 0.05  # relative improvement a new split must bring
    wait_change_ms: float = 20.0  # absolute: the busy cloud's expected wait
    mode: str = "replan"  # one of MODES
    noise_hysteresis: float = 2.0  # hysteresis per unit of the link's measured relative noise
    max_hysteresis: float = 0.5  # the most the noise may raise it to

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidArgument(f"re-scheduling mode must be one of {', '.join(MODES)}, got "
                                  f"{self.mode!r}")
        if min(self.interval_s, self.bandwidth_change, self.rtt_change_ms, self.clock_change,
               self.hysteresis, self.wait_change_ms, self.noise_hysteresis,
               self.max_hysteresis) < 0 or self.interval_s == 0:
            raise InvalidArgument("re-scheduling thresholds must be 0 or more, the interval "
                                  "more than 0")


class Rescheduler:
    """Decides when the next plan is due."""

    def __init__(self, policy: ReschedulePolicy = ReschedulePolicy()) -> None:
        self.policy = policy
        self.planned_at: float | None = None
        self.planned_for: Conditions | None = None

    def due(self, now: float, conditions: Conditions) -> str | None:
        """Why a re-plan is due now (``"first"``, ``"timer"``, ``"bandwidth"``, ``"rtt"``,
        ``"clock"``, ``"cloud load"``), or None."""
        last, p = self.planned_for, self.policy
        if last is None or self.planned_at is None:  # both are set together by planned()
            return "first"
        if p.mode == "once":
            return None
        if p.mode == "every":
            return "every"
        if now - self.planned_at >= p.interval_s:
            return "timer"
        if p.mode == "interval":
            return None
        if abs(conditions.bandwidth_kbps / last.bandwidth_kbps - 1) > p.bandwidth_change:
            return "bandwidth"
        if abs(conditions.rtt_ms - last.rtt_ms) > p.rtt_change_ms:
            return "rtt"
        if abs(conditions.clock_ghz / last.clock_ghz - 1) > p.clock_change:
            return "clock"
        if abs(conditions.cloud_wait_s - last.cloud_wait_s) * 1000 > p.wait_change_ms:
            return "cloud load"
        return None

    def planned(self, now: float, conditions: Conditions) -> None:
        self.planned_at = now
        self.planned_for = conditions


def with_hysteresis(plan: SplitPlan, current: int | None, hysteresis: float) -> SplitPlan:
    """``plan``, or the same table with ``current`` kept chosen when switching gains too little.

    The current split stays unless the new choice is faster or cheaper by more than
    ``hysteresis`` (relative), and only while it still meets a deadline or budget the new
    choice meets.
    """
    if current is None or current == plan.split_point or current >= len(plan.latency_s):
        return plan
    new, old = plan.chosen, plan.candidate(current)
    gains = (new.latency_s < old.latency_s * (1 - hysteresis)
             or new.cost_usd < old.cost_usd * (1 - hysteresis))
    objective = plan.objective
    if objective.deadline_s is not None and plan.constraint_met:
        gains = gains or old.latency_s > objective.deadline_s
    if objective.max_cost_usd is not None and plan.constraint_met:
        gains = gains or old.cost_usd > objective.max_cost_usd
    return plan if gains else replace(plan, split_point=current)


def noise_hysteresis(policy: ReschedulePolicy, noise: float) -> float:
    """The hysteresis for links this noisy: ``policy.hysteresis``, or ``noise_hysteresis``
    times the measured relative noise of transfer times when that is larger, at most
    ``max_hysteresis``. On a noisy link near-equal splits swap places from one plan to the
    next; a quiet link keeps the policy's small hysteresis and follows real changes closely."""
    if policy.mode == "every":  # the chooser without hysteresis
        return 0.0
    return min(max(policy.hysteresis, policy.noise_hysteresis * noise),
               max(policy.max_hysteresis, policy.hysteresis))
