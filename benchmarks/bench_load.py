"""Load: 50 simulated edges against one cloud server, below and above saturation.

    python benchmarks/bench_load.py [--edges 50] [--duration 60] [--overload-duration 20]

Starts ``edgesplit cloud serve`` (mnist_cnn and alexnet, 2 tail workers, 32 pending at most) on
a loopback port. Half the edges send MNIST tails, half AlexNet tails, at mixed split points, each
from a precomputed cut of the sample input. First each edge pauses a second between requests
(an offered load below what two cores can serve): the target is zero errors. Then every edge
sends back to back (above saturation): the server must answer the excess with clean 503s and
Retry-After, not errors or unbounded queues. Prints throughput, p50/p99 latency, status counts
and the server's memory before and after. Stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from _server import serving
from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.wire.codecs import encode_tensor
from edgesplit.wire.protocol import encode_request

SPLITS = {"mnist_cnn": [0, 2, 5, 6, 8], "alexnet": [0, 6, 14, 16, 19]}
Work = list[tuple[int, bytes, dict[str, str]]]  # (split point, body, headers) of each request


def bodies() -> dict[str, Work]:
    out: dict[str, Work] = {}
    for model, split_points in SPLITS.items():
        x = zoo.sample_input(model)
        split = SplitModel(zoo.build_model(model), x)
        out[model] = []
        for sp in split_points:
            tensors = [encode_tensor(t, name=s.name) for t, s in
                       zip(split.head(x, sp), split.split_points[sp].tensors, strict=True)]
            out[model].append((sp, *encode_request(tensors, {"split_point": sp})))
    return out


async def edge(client: httpx.AsyncClient, model: str, work: Work, pause_s: float,
               until: float, latencies: list[float], statuses: dict[int, int],
               rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(0, pause_s))  # edges are not synchronised
    while time.monotonic() < until:
        _, content, headers = rng.choice(work)
        began = time.perf_counter()
        try:
            response = await client.post(f"/v2/models/{model}/infer", content=content,
                                         headers=headers)
            status = response.status_code
        except httpx.HTTPError:
            status = 0  # a transport error: what must never happen
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            latencies.append(time.perf_counter() - began)
        await asyncio.sleep(pause_s if status == 200 else max(pause_s, 0.05))


async def phase(url: str, work: dict[str, Work], edges: int, seconds: float,
                pause_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=edges, max_keepalive_connections=edges)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        until = time.monotonic() + seconds
        began = time.monotonic()
        models = list(work)
        await asyncio.gather(*(edge(client, models[i % 2], work[models[i % 2]], pause_s, until,
                                    latencies, statuses, random.Random(i))
                               for i in range(edges)))
        elapsed = time.monotonic() - began
    latencies.sort()
    return {"throughput": len(latencies) / elapsed, "statuses": statuses,
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p99": latencies[int(len(latencies) * 0.99)] if latencies else float("nan")}


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmRSS"))) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--overload-duration", type=float, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = bodies()
    with serving(",".join(SPLITS), "--workers", "2", "--max-pending", "32") as (server, url):
        before = rss_mb(server.pid())
        print(f"{args.edges} edges, server on 2 cores with 2 tail workers, 32 pending at most\n")
        print("| load | seconds | completed/s | p50 ms | p99 ms | 200 | 503 | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for name, seconds, pause in (("below saturation (1 s pauses)", args.duration, 1.0),
                                     ("above saturation (back to back)",
                                      args.overload_duration, 0.0)):
            r = asyncio.run(phase(url, work, args.edges, seconds, pause))
            s = r["statuses"]
            errors = sum(n for code, n in s.items() if code not in (200, 503))
            print(f"| {name} | {seconds:g} | {r['throughput']:.1f} | {r['p50'] * 1e3:.1f} | "
                  f"{r['p99'] * 1e3:.1f} | {s.get(200, 0)} | {s.get(503, 0)} | {errors} |")
        after = rss_mb(server.pid())
        healthy = httpx.get(f"{url}/v2/health/ready", timeout=5).is_success
        print(f"\nserver memory: {before:.0f} MB before, {after:.0f} MB after; "
              f"ready afterwards: {healthy}")


if __name__ == "__main__":
    main()
