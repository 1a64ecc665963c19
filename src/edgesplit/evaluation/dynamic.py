"""``edgesplit experiment --suite dynamic``: choosers compared on condition traces replayed live.

The testbed's knobs follow a trace (``evaluation.traces``) while one edge keeps inferring: the
``tbf`` rate or the userspace link's rate in place, the relay's round trip, the edge's CPU quota
(or duty cycle) and the cloud stopped (SIGSTOP) and let go on. The edge learns the link only from
its own transfers, pings and probes, as in the field; its clock sensor reads the emulated clock.

Per trace, edge and objective, every chooser replays the whole trace in an order shuffled per
repeat (interleaved, seeded): ``plan-once``, ``replan`` (edgesplit as shipped), ``every``,
``interval`` (``ReschedulePolicy.mode``) and ``hindsight``, which forces, in each stretch of the
trace, the split the oracle measured best at those conditions (every split point forced end to
end at each distinct condition first: ``oracle.json``). One row per inference goes to
``runs.csv``: the static suite's columns plus ``trace``, ``t_s`` and what the edge believed.
"""

from __future__ import annotations

import csv
import json
import random
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgesplit.core import zoo
from edgesplit.core.cost import cost_usd, edge_mode
from edgesplit.core.policies import choose, strategy
from edgesplit.errors import InvalidArgument, TestbedError
from edgesplit.evaluation.dynamic_metrics import CHOOSERS, FORMAT, HINDSIGHT, key, oracle_table
from edgesplit.evaluation.runs import COLUMNS as STATIC_COLUMNS
from edgesplit.evaluation.traces import Point, Trace, library_names, load_traces, scaled
from edgesplit.testbed.bench import MAX_CLOCK_GHZ, Bench, NetnsBench, UserspaceBench, forward_s

OBJECTIVES = {"OL": "latency", "OC": "cost", "CL": "rank"}
COLUMNS = (*STATIC_COLUMNS, "objective", "trace", "t_s", "believed_bandwidth_kbps",
           "believed_rtt_ms", "cloud_up", "oracle_split", "replan", "fallback", "probe_bytes",
           "lost")
STEP_TOLERANCE = 0.25
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class DynamicConfig:
    models: tuple[str, ...] = ("alexnet",)
    traces: tuple[str, ...] = field(default_factory=lambda: tuple(library_names()))
    edges: tuple[str, ...] = ("rent",)
    objectives: tuple[str, ...] = ("OL",)
    repeats: int = 1
    seed: int = 0
    testbed: str = "auto"
    slot_s: float = 0.5  # one inference starts at most every slot
    time_scale: float = 0.5  # the traces played this many times as long
    interval_s: float = 5.0  # the ``interval`` chooser's period (and ``replan``'s timer)
    oracle_repeats: int = 1
    edge_speed: float = 1.0

    def __post_init__(self) -> None:
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad or not set(self.edges) <= {"own", "rent"}:
            raise InvalidArgument(f"objectives are {', '.join(OBJECTIVES)} and edges own or "
                                  f"rent, got {', '.join(self.objectives)} and "
                                  f"{', '.join(self.edges)}")
        if not (self.models and self.traces and self.repeats >= 1):
            raise InvalidArgument("give at least one model, one trace and one repeat")
        load_traces(self.traces)  # every trace named is checked before anything starts

    @classmethod
    def quick(cls, **changes: Any) -> DynamicConfig:
        """The MNIST CNN on two traces played in 0.15 of their time: about two minutes."""
        return replace(cls(models=("mnist_cnn",), traces=("step-down", "outage"),
                           time_scale=0.15, interval_s=2.0), **changes)


def make_bench(mode: str, config: DynamicConfig, logs: Path, tag: str) -> Bench:
    # The clock self-check runs AlexNet's forwards (long enough for many CFS periods).
    models = list(dict.fromkeys([*config.models, "alexnet"]))
    if mode == "netns":  # the relay's jitter drawn from the run's seed, as the static suites'
        return NetnsBench(models, 0.0, logs, tag, edge_speed=config.edge_speed, seed=config.seed)
    return UserspaceBench(models, 0.0, logs, edge_speed=config.edge_speed, seed=config.seed)


def apply(bench: Bench, point: Point) -> None:
    """Set the testbed to ``point`` (the edge keeps running)."""
    bench.set_conditions(point.bandwidth_kbps, point.clock_ghz)
    bench.set_delay(point.rtt_ms, point.jitter_ms)
    bench.set_cloud_up(point.cloud_up)


@dataclass
class DynamicExperiment:
    config: DynamicConfig
    out_dir: Path
    progress: Progress | None = None
    say: Callable[[str], None] = print
    record: dict[str, Any] = field(default_factory=dict)

    def run(self) -> Path:
        from edgesplit.evaluation.experiment import lock_folder, resolve_testbed

        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidArgument(f"cannot create {self.out_dir} ({exc.strerror}): choose "
                                  "another --out") from exc
        if (self.out_dir / "runs.csv").exists():
            raise InvalidArgument(f"{self.out_dir} already holds a run: choose another --out")
        traces = [scaled(t, self.config.time_scale) for t in load_traces(self.config.traces)]
        mode, tag, began = resolve_testbed(self.config.testbed), secrets.token_hex(3), time.time()
        self.record = {"format": FORMAT, "suite": "dynamic", "config": asdict(self.config),
                       "testbed": {"mode": mode, "tag": tag},
                       "traces": [t.to_dict() for t in traces]}
        with lock_folder(self.out_dir):
            self._save()
            with make_bench(mode, self.config, self.out_dir / "logs", tag) as bench:
                self.record["self_checks"] = step_checks(bench)
                self._save()
                oracle = self._oracle(bench, traces)
                self._replay_all(bench, traces, oracle)
        self.record["seconds"] = round(time.time() - began, 1)
        self.record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        self._save()
        return self.out_dir

    def _save(self) -> None:
        (self.out_dir / "config.json").write_text(json.dumps(self.record, indent=1) + "\n")

    def _oracle(self, bench: Bench, traces: list[Trace]) -> dict[str, Any]:
        """Every split point forced at every distinct condition the traces visit (cloud up)."""
        found: dict[str, Any] = {}
        for model in self.config.models:
            profile = bench.edge.ask({"op": "profile", "model": model, "repeats": 5})
            bench.edge.ask({"op": "load", "model": model, "profile": profile["profile"]})
            n = zoo.get_spec(model).split_points
            found[model] = {}
            conditions = list(dict.fromkeys(p.condition() for t in traces for p in t.points))
            for i, condition in enumerate(conditions):
                self._tell(i, len(conditions), f"oracle of {model}: condition {i + 1}")
                found[model][key(condition)] = measure_condition(
                    bench, model, Point(0, *condition), n, self.config.oracle_repeats)
        (self.out_dir / "oracle.json").write_text(json.dumps(found, indent=1) + "\n")
        return found

    def _tell(self, done: int, total: int, what: str) -> None:
        if self.progress:
            self.progress(done, total, what)

    def _replay_all(self, bench: Bench, traces: list[Trace], oracle: dict[str, Any]) -> None:
        c = self.config
        jobs = [(r, m, t, e, o) for r in range(c.repeats) for m in c.models for t in traces
                for e in c.edges for o in c.objectives]
        total = len(jobs) * (len(CHOOSERS) + 1)
        with open(self.out_dir / "runs.csv", "w", newline="") as sink:
            writer = csv.DictWriter(sink, COLUMNS)
            writer.writeheader()
            for j, (repeat, model, trace, edge, objective) in enumerate(jobs):
                order = [*CHOOSERS, HINDSIGHT]
                random.Random(f"{c.seed}/{repeat}/{trace.name}/{edge}/{objective}").shuffle(order)
                for k, chooser in enumerate(order):
                    self._tell(j * len(order) + k, total, f"{trace.name}: {chooser} "
                               f"({edge}, {objective}, repeat {repeat + 1})")
                    replay = Replay(bench, c, model, trace, edge, objective, chooser,
                                    oracle[model], repeat)
                    for row in replay.run():
                        writer.writerow(row)
                    sink.flush()
        self._tell(total, total, "done")


def measure_condition(bench: Bench, model: str, point: Point, n: int,
                      repeats: int) -> dict[str, Any]:
    """Each split point's median latency and parts at ``point``; with the cloud down only the
    whole model on the edge finishes (every other split point is infinitely slow)."""
    apply(bench, point)
    if not point.cloud_up:
        return {"cloud_up": False}
    rows: list[dict[str, float]] = []
    for split in range(n):
        runs = [bench.edge.ask({"op": "infer", "model": model, "split_point": split,
                                "clock_ghz": point.clock_ghz,
                                "bandwidth_kbps": point.bandwidth_kbps,
                                "rtt_ms": point.rtt_ms})["measurement"] for _ in range(repeats)]
        best = sorted(runs, key=lambda m: float(m["latency_s"]))[len(runs) // 2]
        rows.append({k: best[k] for k in ("latency_s", "edge_s", "cloud_s", "sent_bytes")})
    return {"cloud_up": True, "splits": rows}


def oracle_split(entry: dict[str, Any], n: int, edge: str, objective: str) -> int:
    latency, cost = oracle_table(entry, n, edge)
    if not entry["cloud_up"]:
        return n - 1
    return choose(strategy(OBJECTIVES[objective]), latency, cost).split_point


@dataclass
class Replay:
    """One chooser through one trace."""

    bench: Bench
    config: DynamicConfig
    model: str
    trace: Trace
    edge: str
    objective: str
    chooser: str
    oracle: dict[str, Any]
    repeat: int

    def run(self) -> list[dict[str, Any]]:
        first = self.trace.points[0]
        apply(self.bench, first)
        self.bench.edge.ask({
            "op": "start", "model": self.model, "strategy": OBJECTIVES[self.objective],
            "edge": self.edge, "mode": CHOOSERS.get(self.chooser, "replan"),
            "interval_s": self.config.interval_s, "bandwidth_kbps": first.bandwidth_kbps,
            "rtt_ms": first.rtt_ms})
        rows, current, began = [], first, time.monotonic()
        while (t := time.monotonic() - began) < self.trace.duration_s:
            point = self.trace.at(t)
            if point != current:
                apply(self.bench, point)
                current = point
            rows.append(self._step(t, point))
        apply(self.bench, self.trace.points[0])  # the cloud goes on for what comes next
        return rows

    def _step(self, t: float, point: Point) -> dict[str, Any]:
        n = zoo.get_spec(self.model).split_points
        best = oracle_split(self.oracle[key(point.condition())], n, self.edge, self.objective)
        forced = best if self.chooser == HINDSIGHT else None
        try:
            answer = self.bench.edge.ask({"op": "step", "model": self.model,
                                          "clock_ghz": point.clock_ghz,
                                          "slot_s": self.config.slot_s, "split_point": forced},
                                         timeout_s=120)
        except TestbedError:  # an inference the edge did not finish: lost
            return self._row(t, point, best, {}, 0, lost=True)
        return self._row(t, point, best, answer["measurement"], answer["probe_bytes"])

    def _row(self, t: float, point: Point, best: int, m: dict[str, Any], probe_bytes: int,
             lost: bool = False) -> dict[str, Any]:
        row = {
            "model": self.model, "edge": self.edge, "predictor": m.get("predictor", ""),
            "strategy": self.chooser, "setting": self.trace.segment(t), "repeat": self.repeat,
            "bandwidth_kbps": point.bandwidth_kbps, "clock_ghz": point.clock_ghz,
            "rtt_ms": point.rtt_ms, "method": "live", "objective": self.objective,
            "trace": self.trace.name, "t_s": round(t, 4),
            "believed_bandwidth_kbps": m.get("bandwidth_kbps", ""),
            "believed_rtt_ms": m.get("rtt_ms", ""), "cloud_up": int(point.cloud_up),
            "oracle_split": best, "replan": m.get("replan", ""),
            "fallback": m.get("fallback") or "", "probe_bytes": probe_bytes, "lost": int(lost)}
        for name in ("split_point", "codec", "predicted_latency_s", "latency_s", "edge_s",
                     "comm_s", "cloud_s", "sent_bytes"):
            row[name] = m.get(name, "")
        row["cost_usd"] = (cost_usd(float(m["edge_s"]), float(m["cloud_s"]),
                                    int(m["sent_bytes"]), edge_mode(self.edge)) if m else "")
        return row


def step_checks(bench: Bench) -> list[dict[str, Any]]:
    """A tenfold bandwidth step and a 2.5x clock step, each checked on the first transfer or
    forward measured after it (the clock's three times): the replay's knobs act within one
    inference."""
    checks = []
    payload, base = 200_000, Point(0, 40_000, 0.0)
    for before, after in ((40_000, 4_000), (4_000, 40_000)):
        apply(bench, replace(base, bandwidth_kbps=before))
        empty = bench.edge.ask({"op": "send", "bytes": 1})["seconds"]
        bench.edge.ask({"op": "send", "bytes": payload})
        apply(bench, replace(base, bandwidth_kbps=after))
        measured = bench.edge.ask({"op": "send", "bytes": payload})["seconds"] - empty
        expected = payload * 8 / (after * 1000)
        error = measured / expected - 1
        checks.append({"check": "bandwidth step", "from_kbps": before, "to_kbps": after,
                       "measured_s": round(measured, 4), "expected_s": round(expected, 4),
                       "error": round(error, 3), "passed": abs(error) <= STEP_TOLERANCE})
    ratios = []
    for _ in range(3):  # the median of three steps: one disturbed pair does not fail the check
        apply(bench, base)
        full = forward_s(bench, "alexnet")
        apply(bench, replace(base, clock_ghz=0.6))
        ratios.append(forward_s(bench, "alexnet") / full)
    apply(bench, base)
    slowdown, expected = statistics.median(ratios), MAX_CLOCK_GHZ / 0.6
    checks.append({"check": "clock step", "from_ghz": MAX_CLOCK_GHZ, "to_ghz": 0.6,
                   "measured_slowdown": round(slowdown, 3), "expected_slowdown": expected,
                   "error": round(slowdown / expected - 1, 3),
                   "passed": abs(slowdown / expected - 1) <= STEP_TOLERANCE})
    return checks

