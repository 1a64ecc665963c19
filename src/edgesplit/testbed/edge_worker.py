"""The experiment's edge: one process, slowed by the testbed, that measures what it is asked to.

Run as ``python -m edgesplit.testbed.edge_worker CLOUD_URL MODELS THREADS`` (inside the edge's
namespace and cgroup, or duty-cycled). It builds the models, prints ``{"ready": true}``, then
answers one JSON line per request line (JSON on pipes, never pickle):

- ``{"op": "profile", "model": M, "repeats": R}``: this edge's profile of M at its current speed.
- ``{"op": "forward", "model": M, "repeats": R, "min_time_s": T}``: whole-forward times, each the
  mean over at least ``T`` seconds of forwards (many CFS periods or duty cycles).
- ``{"op": "load", "model": M, "profile": {...}}``: an ``EdgeRuntime`` for M with that profile.
- ``{"op": "infer", "model": M, "split_point": K, "clock_ghz": C, "bandwidth_kbps": B,
  "rtt_ms": R}``: one inference forced at split K through the real runtime (measured as usual).
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

from edgesplit.core.planning import Objective
from edgesplit.core.profiles import Profile
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.client import CloudClient
from edgesplit.edge.runtime import EdgeRuntime, Timing
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


class Worker:
    def __init__(self, cloud_url: str, models: list[str]) -> None:
        self.cloud_url = cloud_url
        loaded = [load_model(source) for source in models]  # zoo names and one's own files
        self.splits = {m.name: m.split for m in loaded}
        self.inputs = {m.name: m.sample for m in loaded}
        self.runtimes: dict[str, EdgeRuntime] = {}
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
        planner = cached_planner(model, profile, Objective("latency", 0.0, "rent"))
        self.runtimes[model] = EdgeRuntime(
            self.splits[model], planner, client=CloudClient(self.cloud_url), clock=self.clock,
            link=LinkEstimator(7200, 20),
            timing=Timing(deadline_factor=50.0, min_deadline_s=10.0, retry_s=0.5))
        return {"loaded": model}

    def op_infer(self, request: dict[str, Any]) -> dict[str, Any]:
        runtime = self.runtimes[request["model"]]
        self.clock.ghz = float(request["clock_ghz"])
        runtime.link = LinkEstimator(float(request["bandwidth_kbps"]), float(request["rtt_ms"]))
        result = runtime.infer(self.inputs[request["model"]], int(request["split_point"]))
        return {"measurement": dataclasses.asdict(result.measurement)}

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
