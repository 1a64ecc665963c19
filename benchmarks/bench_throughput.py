"""Cloud throughput on loopback: edgesplit's server against a cloud built the thesis's way.

    python benchmarks/bench_throughput.py [--seconds 4] [--concurrency 1,8,32] [--servers ...]

For the MNIST CNN (split point 5, after the second pool) and AlexNet (split point 14, so the cloud
runs the fully connected layers), closed-loop clients on loopback keep ``concurrency`` requests
in flight for ``--seconds`` against each server, one after another, in one run:

- ``thesis``: the comparator of ``thesis_server.py`` (Flask, base64 JSON, ``/offload``);
- ``edgesplit``: ``edgesplit cloud serve`` as shipped (OIP v2, binary tensors, one tail worker
  with torch on every core, adaptive batching of up to 8 rows);
- ``unbatched``: the same with ``--max-batch-size 1`` (what a lone request pays for batching);
- ``two-workers``: batching on two tail workers of one torch thread each;
- ``ray``: the same app on Ray Serve (``--backend ray``), where the ``ray`` extra is installed.

Prints requests per second, the ratio to the thesis design's in this same run, and p50/p99
latency; a non-200 answer counts as an error. Then, per model, the shipped server's throughput
over the thesis design's at 8 in flight and its p50 over the unbatched server's at 1 in flight
(a lone request), where those were measured. The clients (``_loadgen.py``: raw HTTP/1.1 on
asyncio streams, each request's bytes built once) share the machine's cores with the server, as
in the issue's measurement.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from _loadgen import Result, raw_request
from _loadgen import run as closed_loop
from _server import serving, serving_thesis
from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.wire.codecs import encode_tensor
from edgesplit.wire.protocol import encode_request

CASES = {"mnist_cnn": 5, "alexnet": 14}
MODELS = ",".join(CASES)

Server = Callable[[], AbstractContextManager[Any]]
SERVERS: dict[str, tuple[str, Server]] = {
    "thesis": ("thesis", lambda: serving_thesis(MODELS)),
    "edgesplit": ("oip", lambda: serving(MODELS)),
    "unbatched": ("oip", lambda: serving(MODELS, "--max-batch-size", "1")),
    # Two tails at once, each on one core.
    "two-workers": ("oip", lambda: serving(MODELS, "--workers", "2", "--torch-threads", "1")),
    "ray": ("oip", lambda: serving(MODELS, "--backend", "ray", "--replicas", "1",
                                   "--max-batch-size", "8", "--batch-wait-ms", "2")),
}


def request_bodies(model: str, split_point: int) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    """The same cut of the sample input as each dialect sends it: (path, body, headers)."""
    x = zoo.sample_input(model)
    split = SplitModel(zoo.build_model(model), x)
    (cut,) = split.head(x, split_point)
    spec = split.split_points[split_point].tensors[0]
    content, headers = encode_request([encode_tensor(cut, name=spec.name)],
                                      {"split_point": split_point})
    thesis = json.dumps({"tensor": base64.b64encode(cut.numpy().astype("<f4").tobytes()).decode(),
                         "splitting_point": split_point, "model": model}).encode()
    return {"oip": (f"/v2/models/{model}/infer", content, headers),
            "thesis": ("/offload", thesis, {"content-type": "application/json"})}


def available(name: str) -> bool:
    return name != "ray" or importlib.util.find_spec("ray") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    levels = [int(c) for c in args.concurrency.split(",")]
    names = [n for n in args.servers.split(",") if available(n)]
    skipped = [n for n in args.servers.split(",") if not available(n)]
    bodies = {model: request_bodies(model, sp) for model, sp in CASES.items()}
    results: dict[tuple[str, str, int], Result] = {}
    for name in names:
        dialect, server = SERVERS[name]
        with server() as (_, url):
            for model in CASES:
                path, content, headers = bodies[model][dialect]
                request = raw_request(url, path, content, headers)
                for level in levels:
                    results[name, model, level] = closed_loop(url, request, level, args.seconds)
    print(f"closed loop on loopback, {args.seconds:g} s per cell; ratio = requests/s over the "
          "thesis design's in this run" + (f"; skipped: {', '.join(skipped)} (not installed)"
                                           if skipped else "") + "\n")
    print("| model (split point) | concurrency | server | requests/s | ratio | p50 ms | p99 ms "
          "| errors |")
    print("|---|---|---|---|---|---|---|---|")
    for model, sp in CASES.items():
        for level in levels:
            base = results.get(("thesis", model, level))
            for name in names:
                r = results[name, model, level]
                ratio = (f"{r.throughput / base.throughput:.2f}x" if base and base.throughput
                         else "-")
                print(f"| {model} ({sp}) | {level} | {name} | {r.throughput:.1f} | {ratio} | "
                      f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.errors} |")
    print()
    for model in CASES:
        print(headline(results, model))


def headline(results: dict[tuple[str, str, int], Result], model: str) -> str:
    """The shipped server against the thesis design at 8 in flight, and against the unbatched
    one for a lone request, as far as this run measured them."""
    parts = []
    shipped, thesis = results.get(("edgesplit", model, 8)), results.get(("thesis", model, 8))
    if shipped and thesis and thesis.throughput:
        parts.append(f"{shipped.throughput / thesis.throughput:.2f}x the thesis design's "
                     "throughput at 8 in flight")
    lone, unbatched = results.get(("edgesplit", model, 1)), results.get(("unbatched", model, 1))
    if lone and unbatched:
        parts.append(f"a lone request's p50 {lone.p50_ms / unbatched.p50_ms:.2f}x the "
                     f"unbatched server's ({lone.p50_ms:.1f} against {unbatched.p50_ms:.1f} ms)")
    return f"{model}, shipped defaults: " + ("; ".join(parts) or "not measured in this run")


if __name__ == "__main__":
    main()
