"""End-to-end overhead of an offload on loopback, beyond the compute itself.

    python benchmarks/bench_overhead.py [--model mnist_cnn] [--runs 200]

Starts a real cloud server on a loopback port and, for every split point, offloads the sample
input's cut ``--runs`` times through the edge's own client. Overhead = measured total minus the
head's and the tail's layer times (transfer on loopback is microseconds): encoding, HTTP on both
sides, decoding, the server's thread hop, the answer. Side by side, in the same run, it measures
a bare HTTP round trip (``GET /v2/health/live``) to compare against. Target: under 2 ms median
for mnist_cnn.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _server import serving
from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.edge.client import CloudClient
from edgesplit.wire.codecs import encode_tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with serving(args.model) as (_, url):
        x = zoo.sample_input(args.model)
        split = SplitModel(zoo.build_model(args.model), x)
        with CloudClient(url) as client:
            bare = []
            for _ in range(args.runs):
                bare.append(client.ping())
            print(f"{args.model}, {args.runs} offloads per split point, loopback\n")
            print("| sp | layer | sends KiB | median overhead ms | p90 ms | median total ms |")
            print("|---|---|---|---|---|---|")
            everything = []
            for sp in split.split_points:
                overheads, totals = [], []
                for i in range(args.runs + 5):
                    head_layers: list[float] = []
                    began = time.perf_counter()
                    sent = split.head(x, sp.split_point, head_layers)
                    encoded = [encode_tensor(t, name=s.name)
                               for t, s in zip(sent, sp.tensors, strict=True)]
                    reply = client.infer(args.model, sp.split_point, encoded, deadline_s=10)
                    total = time.perf_counter() - began
                    if i >= 5:  # warm-up
                        overheads.append(total - sum(head_layers) - sum(reply.layer_times_s))
                        totals.append(total)
                everything += overheads
                overheads.sort()
                print(f"| {sp.split_point} | {sp.layer} | {sp.offload_bytes / 1024:.1f} | "
                      f"{statistics.median(overheads) * 1e3:.2f} | "
                      f"{overheads[int(len(overheads) * 0.9)] * 1e3:.2f} | "
                      f"{statistics.median(totals) * 1e3:.2f} |")
        median = statistics.median(everything)
        print(f"\nmedian overhead over all split points: {median * 1e3:.2f} ms; a bare HTTP "
              f"round trip: {statistics.median(bare) * 1e3:.2f} ms; overhead / bare round trip "
              f"= {median / statistics.median(bare):.1f}x")


if __name__ == "__main__":
    main()
