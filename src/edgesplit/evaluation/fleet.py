"""A fleet of simulated edges sharing one cloud tier: a discrete-event simulation.

Each edge follows its own trace of uplink bandwidth, round-trip time and clock speed (changing
every ``segment_s``) and starts inferences at random (Poisson, one every ``interval_s`` on
average). Before each it asks the real ``Planner`` for a split point; its layers take what the
profile says at its clock (with a little noise), its upload what the link allows, and the cloud
is ``replicas`` servers taking requests first come, first served, each tail taking the time
measured on this machine (the cloud's profile). A load-aware edge plans with the wait the cloud
reported in its last answer (``core.load.expected_wait_s``); a load-blind one as if the cloud
were idle. Nothing here sleeps or touches the network: a simulated hour takes seconds.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edgesplit.core.cost import cost_usd
from edgesplit.core.load import TailLoad, expected_wait_s
from edgesplit.core.planning import Planner
from edgesplit.core.predictors import Conditions, Prediction, Predictor


@dataclass(frozen=True)
class FleetConfig:
    """The fleet: how many edges, how many cloud replicas, how long and how busy."""

    edges: int
    replicas: int
    duration_s: float = 60.0
    interval_s: float = 5.0  # mean time between one edge's inferences
    segment_s: float = 10.0  # how long one edge's conditions hold
    noise: float = 0.05  # relative spread of measured times around the profile's
    seed: int = 0


@dataclass
class FleetResult:
    """What the fleet measured: per inference latency and cost, and the planner's share."""

    latencies_s: list[float] = field(default_factory=list)
    costs_usd: list[float] = field(default_factory=list)
    split_points: list[int] = field(default_factory=list)
    plans: int = 0
    planning_s: float = 0.0
    events: int = 0
    n_layers: int = 0

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies_s)
        return {
            "inferences": len(ordered),
            "p50_ms": statistics.median(ordered) * 1e3,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
            "mean_ms": statistics.fmean(ordered) * 1e3,
            "cost_uusd": statistics.fmean(self.costs_usd) * 1e6,
            "mean_split": statistics.fmean(self.split_points),
            "edge_only_pct": 100 * self.split_points.count(self.n_layers) / len(ordered),
            "plan_us": self.planning_s / max(1, self.plans) * 1e6,
        }


def conditions_trace(rng: random.Random, segments: int) -> list[Conditions]:
    """One edge's conditions, segment by segment: a rural to an urban uplink, a Pi's clocks."""
    return [Conditions(bandwidth_kbps=math.exp(rng.uniform(math.log(500), math.log(50_000))),
                       rtt_ms=rng.uniform(5, 80), clock_ghz=rng.choice((0.6, 0.9, 1.2, 1.5)))
            for _ in range(segments)]


@dataclass(order=True)
class _Event:
    at_s: float
    seq: int
    kind: str = field(compare=False)
    edge: int = field(compare=False)
    split_point: int = field(default=0, compare=False)
    started_s: float = field(default=0.0, compare=False)
    edge_s: float = field(default=0.0, compare=False)
    tail_s: float = field(default=0.0, compare=False)


class FleetSimulation:
    """Runs one strategy over one fleet; ``tail_s[sp]`` is the measured tail at split point sp."""

    def __init__(self, config: FleetConfig, planner: Planner, truth: Predictor,
                 tail_s: Sequence[float], *, load_aware: bool) -> None:
        self.config = config
        self.planner = planner
        self.truth = truth
        self.tail_s = list(tail_s)
        self.load_aware = load_aware
        self.rng = random.Random(config.seed)
        segments = math.ceil(config.duration_s / config.segment_s) + 1
        self.traces = [conditions_trace(self.rng, segments) for _ in range(config.edges)]
        self.known_wait_s = [0.0] * config.edges
        self.queue: deque[_Event] = deque()  # requests waiting for a replica, in arrival order
        self.held = [0] * len(self.tail_s)  # per split point: waiting or running
        self.free = config.replicas
        self.events: list[_Event] = []
        self.seq = 0
        self.result = FleetResult(n_layers=len(self.tail_s) - 1)

    def run(self) -> FleetResult:
        for edge in range(self.config.edges):
            first = self.rng.expovariate(1 / self.config.interval_s)
            if first < self.config.duration_s:
                self._schedule(first, "infer", edge)
        handlers = {"infer": self._infer, "arrive": self._arrive, "done": self._done}
        while self.events:
            event = heapq.heappop(self.events)
            self.result.events += 1
            handlers[event.kind](event)
        return self.result

    def _schedule(self, at_s: float, kind: str, edge: int, **fields: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, _Event(at_s, self.seq, kind, edge, **fields))

    def _jitter(self, seconds: float) -> float:
        return seconds * math.exp(self.rng.gauss(0, self.config.noise))

    def _infer(self, event: _Event) -> None:
        now, edge = event.at_s, event.edge
        truth = self._conditions(edge, now)
        wait = self.known_wait_s[edge] if self.load_aware else 0.0
        began = time.perf_counter()
        plan = self.planner.plan(Conditions(truth.bandwidth_kbps, truth.rtt_ms, truth.clock_ghz,
                                            cloud_wait_s=wait))
        self.result.planning_s += time.perf_counter() - began
        self.result.plans += 1
        sp = plan.split_point
        real: Prediction = self.truth.predict(truth)
        edge_s = self._jitter(real.edge_s[sp])
        upload_s = self._jitter(real.comm_s[sp] - truth.rtt_ms / 1000) + truth.rtt_ms / 2000
        self._schedule(now + edge_s + upload_s, "arrive", edge, split_point=sp, started_s=now,
                       edge_s=edge_s)
        following = now + self.rng.expovariate(1 / self.config.interval_s)
        if following < self.config.duration_s:
            self._schedule(following, "infer", edge)

    def _arrive(self, event: _Event) -> None:
        if event.split_point == len(self.tail_s) - 1:  # nothing left to run: answered at once
            self._answer(event)
            return
        self.held[event.split_point] += 1
        self.queue.append(event)
        self._start_next(event.at_s)

    def _start_next(self, now: float) -> None:
        while self.free and self.queue:
            job = self.queue.popleft()
            self.free -= 1
            tail = self._jitter(self.tail_s[job.split_point])
            self._schedule(now + tail, "done", job.edge, split_point=job.split_point,
                           started_s=job.started_s, edge_s=job.edge_s, tail_s=tail)

    def _done(self, event: _Event) -> None:
        self.free += 1
        self.held[event.split_point] -= 1
        self._answer(event)
        self._start_next(event.at_s)

    def _conditions(self, edge: int, at_s: float) -> Conditions:
        trace = self.traces[edge]
        return trace[min(len(trace) - 1, int(at_s // self.config.segment_s))]

    def _half_rtt(self, event: _Event) -> float:
        return self._conditions(event.edge, event.started_s).rtt_ms / 2000

    def _answer(self, event: _Event) -> None:
        """The edge receives its answer, and with it the cloud's load as it is now."""
        latency = event.at_s + self._half_rtt(event) - event.started_s
        objective = self.planner.objective
        self.result.latencies_s.append(latency)
        self.result.costs_usd.append(cost_usd(event.edge_s, event.tail_s, 0, objective.edge,
                                              objective.prices))
        self.result.split_points.append(event.split_point)
        loads = [TailLoad("", sp, held, self.tail_s[sp]) for sp, held in enumerate(self.held)
                 if held]
        self.known_wait_s[event.edge] = expected_wait_s(loads, self.config.replicas)

