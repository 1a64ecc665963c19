"""Load-aware planning against load-blind planning, with a real cloud loaded by many edges.

    python benchmarks/bench_loadaware.py [--inferences 60] [--load-edges 16] [--clock-ghz 1.3]

Starts ``edgesplit cloud serve`` (AlexNet, 2 tail workers, 64 pending at most) on loopback and a
real edge (``EdgeRuntime``, latency strategy, its clock set to ``--clock-ghz`` so that its own
layers are slower than the cloud's). First with the cloud idle, then while ``--load-edges``
other edges (one process of closed-loop clients) send it whole AlexNet inferences back to back,
the edge runs ``--inferences`` inferences planning load-blind (as the thesis: the cloud is never
busy) and as many load-aware (with the wait the cloud reports in each answer), in alternating
blocks of ten so that both see the same load. Prints the split each chose, the measured latency
(p50, p90) and the ratio of load-aware to load-blind, all from this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import torch

from _server import serving
from edgesplit.core import zoo
from edgesplit.core.planning import Objective
from edgesplit.core.rescheduling import ReschedulePolicy
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.edge.runtime import EdgeRuntime
from edgesplit.edge.sensors import FixedClock
from edgesplit.measuring.profiler import load_or_profile
from edgesplit.wire.codecs import encode_tensor
from edgesplit.wire.protocol import encode_request

BLOCK = 10


@dataclass
class Runs:
    latencies_s: list[float]
    split_points: list[int]


def load(url: str, edges: int, stop: Callable[[], bool]) -> None:
    """Other edges: whole AlexNet inferences (split point 0), back to back, until stopped."""
    torch.set_num_threads(1)
    content, headers = encode_request([encode_tensor(zoo.sample_input("alexnet"), name="x")],
                                      {"split_point": 0})

    async def edge(client: httpx.AsyncClient) -> None:
        while not stop():
            await client.post("/v2/models/alexnet/infer", content=content, headers=headers)

    async def fleet() -> None:
        limits = httpx.Limits(max_connections=edges)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            await asyncio.gather(*(edge(client) for _ in range(edges)))

    asyncio.run(fleet())


def loading(url: str, edges: int, event: multiprocessing.synchronize.Event) -> None:
    load(url, edges, event.is_set)


def edge(url: str, clock_ghz: float, aware: bool) -> EdgeRuntime:
    options = EdgeOptions("alexnet", url, objective=Objective("latency"), load_aware=aware,
                          reschedule=ReschedulePolicy(interval_s=2.0), bandwidth_kbps=1e6,
                          rtt_ms=0.2)
    return build_runtime(options, profile=load_or_profile("alexnet"), clock=FixedClock(clock_ghz))


def alternate(edges: dict[bool, EdgeRuntime], inferences: int) -> dict[bool, Runs]:
    x = zoo.sample_input("alexnet")
    runs = {aware: Runs([], []) for aware in edges}
    for block in range(2 * inferences // BLOCK):
        aware = block % 2 == 1
        for _ in range(BLOCK):
            m = edges[aware].infer(x).measurement
            runs[aware].latencies_s.append(m.latency_s)
            runs[aware].split_points.append(m.split_point)
    return runs


def row(phase: str, name: str, r: Runs, base: Runs | None) -> str:
    ordered = sorted(r.latencies_s)
    p50, p90 = statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]
    ratio = f"{p50 / statistics.median(base.latencies_s):.2f}x" if base else "1.00x"
    splits = sorted(set(r.split_points))
    return (f"| {phase} | {name} | {statistics.median(r.split_points):g} "
            f"({', '.join(map(str, splits))}) | {p50 * 1e3:.1f} | {p90 * 1e3:.1f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inferences", type=int, default=60)
    parser.add_argument("--load-edges", type=int, default=16)
    parser.add_argument("--clock-ghz", type=float, default=1.3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with serving("alexnet", "--workers", "2", "--max-pending", "64") as (_, url):
        edges = {aware: edge(url, args.clock_ghz, aware) for aware in (False, True)}
        idle = alternate(edges, args.inferences)
        stop = multiprocessing.Event()
        others = multiprocessing.Process(target=loading, args=(url, args.load_edges, stop))
        others.start()
        try:
            alternate(edges, BLOCK)  # let the load and both edges' estimates settle
            busy = alternate(edges, args.inferences)
        finally:
            stop.set()
            others.join(timeout=120)
            for runtime in edges.values():
                runtime.close()
    print(f"AlexNet, one edge at {args.clock_ghz:g} GHz (latency strategy) against a cloud on "
          f"loopback; {args.inferences} inferences per row; loaded = {args.load_edges} other "
          "edges sending whole inferences back to back\n")
    print("| cloud | planning | split point, median (all seen) | p50 ms | p90 ms "
          "| p50 / load-blind's |")
    print("|---|---|---|---|---|---|")
    for phase, runs in (("idle", idle), ("loaded", busy)):
        print(row(phase, "load-blind", runs[False], None))
        print(row(phase, "load-aware", runs[True], runs[False]))


if __name__ == "__main__":
    main()
