"""Head latency on this CPU: torch's layer-by-layer run against ONNX Runtime's exported head.

    python benchmarks/bench_engines.py [--models alexnet,vgg16,mnist_cnn,resnet18]
        [--cuts 0.25,0.5,1] [--rounds 30] [--threads 1]

For each CNN of the zoo and each cut (a fraction of its layers: 1 is the whole network on the
edge), builds the edge's two engines (``edge run --engine torch|onnxruntime``) and times the
head on the model's sample input, the two engines alternating within every round so that the
machine's drift hits both alike; medians over ``--rounds`` after two warm-up runs each. Both
use ``--threads`` threads. The speed-up is of the medians, and of the minima (the least
disturbed run of each, for a machine shared with other work). The ONNX export of each head (paid
once per split point, outside any inference's timing) is reported apart, and the largest
difference between the two engines' outputs. Goal: ONNX Runtime >= 1.3x faster on the zoo's
CNN heads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from edgesplit.core import zoo
from edgesplit.edge.engines import Engine, OnnxRuntimeEngine, TorchEngine


def _timed(engine: Engine, x: torch.Tensor, split_point: int) -> float:
    began = time.perf_counter()
    engine.head(x, split_point)
    return time.perf_counter() - began


def bench_model(model: str, cuts: list[float], rounds: int, threads: int) -> list[float]:
    """One table row per cut; returns the speed-ups."""
    split, x = zoo.build_split(model), zoo.sample_input(model)
    engines: tuple[Engine, Engine] = (TorchEngine(split),
                                      OnnxRuntimeEngine(split, x, threads=threads))
    speedups = []
    for cut in cuts:
        sp = max(1, round(cut * split.n_layers))
        began = time.perf_counter()
        engines[1].prepare(sp)
        export_s = time.perf_counter() - began
        times: tuple[list[float], list[float]] = ([], [])
        for i in range(rounds + 2):
            for engine, kept in zip(engines if i % 2 else engines[::-1], times if i % 2 else
                                    times[::-1], strict=True):
                elapsed = _timed(engine, x, sp)
                if i >= 2:  # warm-up
                    kept.append(elapsed)
        ran = [e.head(x, sp) for e in engines]
        diff = max(float((a - b).abs().max()) for a, b in zip(*ran, strict=True))
        torch_s, ort_s = statistics.median(times[0]), statistics.median(times[1])
        speedups.append(torch_s / ort_s)
        print(f"| {model} | {sp} of {split.n_layers} | {split.layers[sp - 1].name} | "
              f"{torch_s * 1e3:.2f} | {ort_s * 1e3:.2f} | **{torch_s / ort_s:.2f}x** | "
              f"{min(times[0]) / min(times[1]):.2f}x | {export_s:.1f} | {diff:.1e} |",
              flush=True)
    return speedups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="alexnet,vgg16,mnist_cnn,resnet18")
    parser.add_argument("--cuts", default="0.25,0.5,1")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuts = [float(c) for c in args.cuts.split(",")]
    print(f"head latency, sample input (batch 1), {args.threads} thread(s), median of "
          f"{args.rounds} alternating rounds\n")
    print("| model | split point | last head layer | torch ms | onnxruntime ms | speed-up | "
          "of the minima | export s | max abs diff |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    speedups = []
    for model in args.models.split(","):
        speedups += bench_model(model, cuts, args.rounds, args.threads)
    print(f"\nspeed-up over all heads: median {statistics.median(speedups):.2f}x, lowest "
          f"{min(speedups):.2f}x, highest {max(speedups):.2f}x (goal: >= 1.3x)")


if __name__ == "__main__":
    main()
