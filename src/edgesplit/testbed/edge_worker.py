"""The experiment's edge: one process, slowed by the testbed, that measures what it is asked to.

Run as ``python -m edgesplit.testbed.edge_worker CLOUD_URL MODELS THREADS`` (inside the edge's
namespace and cgroup, or duty-cycled). It builds the models, prints ``{"ready": true}``, then
answers one JSON line per request line (JSON on pipes, never pickle):

- ``{"op": "profile", "model": M, "repeats": R}``: this edge's profile of M at its current speed.
- ``{"op": "forward", "model": M, "repeats": R, "min_time_s": T}``: whole-forward times, each the
  mean over at least ``T`` seconds of forwards (many CFS periods or duty cycles).
- ``{"op": "load", "model": M, "profile": {...}, "codecs": [...]}``: an ``EdgeRuntime`` for M
  with that profile (raw tensors), and one more for each of ``codecs`` (the compressed-input
  baseline) that keeps M's top-1 answers on its calibration inputs at split point 0; answers
  ``{"loaded": M, "codecs": [those kept]}``.
- ``{"op": "infer", "model": M, "split_point": K, "clock_ghz": C, "bandwidth_kbps": B,
  "rtt_ms": R, "codec": X}``: one inference forced at split K through the real runtime (measured
  as usual), with codec X (default ``raw``; another must have been loaded).
- ``{"op": "start", "model": M, "strategy": S, "edge": E, "mode": MODE, "interval_s": I,
  "bandwidth_kbps": B, "rtt_ms": R}``: a fresh runtime for M (its loaded profile) that plans for
  S on an E edge, re-planning as ``ReschedulePolicy(mode=MODE, interval_s=I)`` says, its link
  estimate starting at B and R and learnt from then on (the dynamic suite).
- ``{"op": "step", "model": M, "clock_ghz": C, "slot_s": T, "split_point": K or null}``: one
  inference of that runtime (planned, or forced at K), then what the runtime does between
  inferences (pings, idle-time probes) until T seconds have passed since it began.
- ``{"op": "prefix", "model": M, "warmup": W, "repeats": R}``: whole forwards' cumulative
  per-layer times (the head of every split point at once, at the current speed), the median
  of R after W warm-up forwards.
- ``{"op": "tail", "model": M}``: an all-in-cloud offload's per-layer cloud times.
- ``{"op": "send", "bytes": N}``: seconds to send N bytes to the cloud's probe and get the answer.

Failures answer ``{"error": "..."}``; the worker keeps serving.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from itertools import accumulate
from typing import Any

import torch

from edgesplit.core import zoo
from edgesplit.core.planning import Objective
from edgesplit.core.profiles import Profile
from edgesplit.core.rescheduling import ReschedulePolicy
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.client import CloudClient
from edgesplit.edge.runtime import CodecGuard, EdgeRuntime, Timing
from edgesplit.errors import EdgesplitError
from edgesplit.measuring.store import cached_planner
from edgesplit.models.sources import load_model
from edgesplit.wire.codecs import encode_tensor, parse_codec


class _Clock:
    """The emulated clock the runner sets before each inference (what the edge believes)."""

    def __init__(self) -> None:
        self.ghz = 1.5

    def read_ghz(self) -> float:
        return self.ghz


class _CountingClient(CloudClient):
    """The cloud client, counting the bytes the runtime spends probing the uplink."""

    probe_bytes = 0

    def probe(self, nbytes: int, deadline_s: float) -> float:
        self.probe_bytes += nbytes
        return super().probe(nbytes, deadline_s)


class Worker:
    def __init__(self, cloud_url: str, models: list[str]) -> None:
        self.cloud_url = cloud_url
        loaded = [load_model(source) for source in models]  # zoo names and one's own files
        self.splits = {m.name: m.split for m in loaded}
        self.inputs = {m.name: m.sample for m in loaded}
        # An own model may share a zoo model's name (``pkg.mod:alexnet``): not the zoo's inputs.
        self.zoo = {m.name for m in loaded if m.in_zoo}
        self.runtimes: dict[tuple[str, str], EdgeRuntime] = {}
        self.profiles: dict[str, Profile] = {}
        self.live: dict[str, tuple[EdgeRuntime, _CountingClient]] = {}
        self.clock = _Clock()
        self.client = CloudClient(cloud_url)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise EdgesplitError(f"unknown request {op!r}")
        with torch.inference_mode():
            answer: dict[str, Any] = handler(request)
        return answer

    def op_profile(self, request: dict[str, Any]) -> dict[str, Any]:
        from edgesplit.measuring.profiler import profile_model

        model = request["model"]
        profile = profile_model(model, repeats=int(request["repeats"]), warmup=2,
                                threads=torch.get_num_threads(), clocks_ghz=(),
                                split=self.splits[model], sample=self.inputs[model])
        return {"profile": profile.model_dump(mode="json")}

    def op_forward(self, request: dict[str, Any]) -> dict[str, Any]:
        split, x = self.splits[request["model"]], self.inputs[request["model"]]
        times = []
        for _ in range(int(request["repeats"])):
            began, count = time.perf_counter(), 0
            while (elapsed := time.perf_counter() - began) < request["min_time_s"] or not count:
                split(x)
                count += 1
            times.append(elapsed / count)
        return {"times": times}

    def op_load(self, request: dict[str, Any]) -> dict[str, Any]:
        model = request["model"]
        profile = Profile.model_validate(request["profile"])
        self.profiles[model] = profile
        inputs = zoo.calibration_inputs(model) if model in self.zoo else self.inputs[model]
        guard = CodecGuard(self.splits[model], inputs)
        kept = [c for c in request.get("codecs", []) if guard.allows(0, c)]
        for codec in ("raw", *kept):
            planner = cached_planner(model, profile, Objective("latency", 0.0, "rent"),
                                     codecs=(codec,))
            self.runtimes[(model, codec)] = EdgeRuntime(
                self.splits[model], planner, client=CloudClient(self.cloud_url),
                clock=self.clock, link=LinkEstimator(7200, 20), guard=guard,
                timing=Timing(deadline_factor=50.0, min_deadline_s=10.0, retry_s=0.5))
        return {"loaded": model, "codecs": kept}

    def op_infer(self, request: dict[str, Any]) -> dict[str, Any]:
        runtime = self.runtimes[(request["model"], request.get("codec", "raw"))]
        self.clock.ghz = float(request["clock_ghz"])
        runtime.link = LinkEstimator(float(request["bandwidth_kbps"]), float(request["rtt_ms"]))
        result = runtime.infer(self.inputs[request["model"]], int(request["split_point"]))
        return {"measurement": dataclasses.asdict(result.measurement)}

    def op_start(self, request: dict[str, Any]) -> dict[str, Any]:
        model = request["model"]
        if model in self.live:
            self.live.pop(model)[0].close()
        planner = cached_planner(model, self.profiles[model], Objective(
            request["strategy"], float(request.get("weight", 0.5)), request["edge"]))
        client = _CountingClient(self.cloud_url)
        runtime = EdgeRuntime(
            self.splits[model], planner, client=client, clock=self.clock,
            link=LinkEstimator(float(request["bandwidth_kbps"]), float(request["rtt_ms"])),
            reschedule=ReschedulePolicy(interval_s=float(request["interval_s"]),
                                        mode=request["mode"]),
            timing=Timing(retry_s=1.0))
        self.live[model] = (runtime, client)
        return {"started": model}

    def op_step(self, request: dict[str, Any]) -> dict[str, Any]:
        runtime, client = self.live[request["model"]]
        self.clock.ghz = float(request["clock_ghz"])
        probed = client.probe_bytes
        forced = request.get("split_point")
        result = runtime.run([self.inputs[request["model"]]], count=1,
                             interval_s=float(request["slot_s"]),
                             split_point=None if forced is None else int(forced))[0]
        return {"measurement": dataclasses.asdict(result.measurement),
                "probe_bytes": client.probe_bytes - probed,
                "cloud_down": runtime.cloud_down_reason is not None}

    def op_prefix(self, request: dict[str, Any]) -> dict[str, Any]:
        split, x = self.splits[request["model"]], self.inputs[request["model"]]
        runs = []
        for i in range(int(request.get("warmup", 0)) + int(request.get("repeats", 1))):
            layers: list[float] = []
            split(x, layers)
            if i >= int(request.get("warmup", 0)):
                runs.append([0.0, *accumulate(layers)])
        return {"head_s": [statistics.median(column) for column in zip(*runs, strict=True)]}

    def op_tail(self, request: dict[str, Any]) -> dict[str, Any]:
        model = request["model"]
        encoded = encode_tensor(self.inputs[model], parse_codec("raw"),
                                self.splits[model].split_points[0].tensors[0].name)
        reply = self.client.infer(model, 0, [encoded], deadline_s=120.0)
        return {"layer_times_s": reply.layer_times_s, "cloud_s": reply.cloud_s}

    def op_send(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"seconds": self.client.probe(int(request["bytes"]), deadline_s=600.0)}


def main(argv: list[str]) -> None:
    cloud_url, models, threads = argv[0], argv[1].split(","), int(argv[2])
    torch.set_num_threads(threads)
    worker = Worker(cloud_url, models)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            answer = worker.handle(json.loads(line))
        except (EdgesplitError, KeyError, ValueError, TypeError) as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
