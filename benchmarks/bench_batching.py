"""Adaptive batching, side by side: the shipped server against an unbatched one and the thesis
design, all three running at once and measured in alternating rounds.

    python benchmarks/bench_batching.py [--rounds 6] [--seconds 1.5]

Starts the thesis design (``thesis_server.py``: Flask, base64 JSON), ``edgesplit cloud serve``
as shipped (adaptive batching of up to 8 rows, one tail worker on every core) and the same with
``--max-batch-size 1``, each on its own loopback port, all at once. Then, for the MNIST CNN
(split point 5) and AlexNet (split point 14), ``--rounds`` rounds; each round runs, in turn
(the order rotating from round to round), one client for ``--seconds`` against each server (a
lone request's latency) and 8 clients in flight for ``--seconds`` (throughput). A drift in the
machine's speed thus touches every server alike: on a shared machine, compare the ratios, not the
absolute figures. Prints per model the median over rounds of each server's p50 at 1 in flight
and requests per second at 8, and the ratios the issue asks for: shipped over thesis at 8 in
flight (goal: at least 3x) and shipped over unbatched p50 at 1 (goal: at most 1.1x). Last, the
lone request once more, most tightly side by side: ``--pairs`` single requests to the shipped
and the unbatched server in strict alternation (each pair milliseconds apart), the median of
each and of the pairs' ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import ExitStack

import httpx
import torch

from _loadgen import raw_request
from _loadgen import run as closed_loop
from _server import serving, serving_thesis
from bench_throughput import CASES, MODELS, request_bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--pairs", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bodies = {model: request_bodies(model, sp) for model, sp in CASES.items()}
    with ExitStack() as stack:
        urls = {"thesis": stack.enter_context(serving_thesis(MODELS))[1],
                "shipped": stack.enter_context(serving(MODELS))[1],
                "unbatched": stack.enter_context(serving(MODELS, "--max-batch-size", "1"))[1]}
        dialect = {"thesis": "thesis", "shipped": "oip", "unbatched": "oip"}
        for model in CASES:
            lone: dict[str, list[float]] = {name: [] for name in urls}
            busy: dict[str, list[float]] = {name: [] for name in urls}
            errors = 0
            for index in range(args.rounds):
                order = list(urls)[index % 3:] + list(urls)[:index % 3]
                for name in order:
                    path, content, headers = bodies[model][dialect[name]]
                    request = raw_request(urls[name], path, content, headers)
                    one = closed_loop(urls[name], request, 1, args.seconds)
                    eight = closed_loop(urls[name], request, 8, args.seconds)
                    lone[name].append(one.p50_ms)
                    busy[name].append(eight.throughput)
                    errors += one.errors + eight.errors
            report(model, lone, busy, errors)
            alternate(model, urls["shipped"], urls["unbatched"], bodies[model]["oip"],
                      args.pairs)


def alternate(model: str, shipped: str, unbatched: str,
              body: tuple[str, bytes, dict[str, str]], pairs: int) -> None:
    """Single requests to each server in strict alternation, the first of each pair rotating."""
    path, content, headers = body
    times: dict[str, list[float]] = {shipped: [], unbatched: []}
    with httpx.Client(timeout=60) as client:
        for index in range(pairs + 4):
            for url in (shipped, unbatched) if index % 2 else (unbatched, shipped):
                began = time.perf_counter()
                client.post(url + path, content=content, headers=headers).raise_for_status()
                if index >= 4:  # the first pairs warm the connections up
                    times[url].append(time.perf_counter() - began)
    mine, plain = statistics.median(times[shipped]), statistics.median(times[unbatched])
    per_pair = statistics.median(a / b for a, b in zip(times[shipped], times[unbatched],
                                                       strict=True))
    print(f"  {pairs} alternating pairs of lone requests: shipped p50 {mine * 1e3:.1f} ms, "
          f"unbatched {plain * 1e3:.1f} ms: {mine / plain:.2f}x (median pair ratio "
          f"{per_pair:.2f}x)")


def report(model: str, lone: dict[str, list[float]], busy: dict[str, list[float]],
           errors: int) -> None:
    p50 = {name: statistics.median(values) for name, values in lone.items()}
    rate = {name: statistics.median(values) for name, values in busy.items()}
    rounds = len(next(iter(lone.values())))
    print(f"{model} (split point {CASES[model]}), median of {rounds} alternating rounds, "
          f"{errors} errors:")
    for name in lone:
        print(f"  {name:9s}  1 in flight: p50 {p50[name]:6.1f} ms   8 in flight: "
              f"{rate[name]:7.1f} requests/s")
    print(f"  shipped / thesis at 8 in flight: {rate['shipped'] / rate['thesis']:.2f}x "
          f"(per round: {ratios(busy['shipped'], busy['thesis'])})")
    print(f"  shipped / unbatched p50 at 1 in flight: {p50['shipped'] / p50['unbatched']:.2f}x "
          f"(per round: {ratios(lone['shipped'], lone['unbatched'])})")


def ratios(tops: list[float], bottoms: list[float]) -> str:
    return ", ".join(f"{top / bottom:.2f}" for top, bottom in zip(tops, bottoms, strict=True))

if __name__ == "__main__":
    main()
