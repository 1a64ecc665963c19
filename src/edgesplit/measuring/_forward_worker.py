"""A process that times whole forwards of one zoo model, for clock calibration.

Run as ``python -m edgesplit.measuring._forward_worker MODEL THREADS``. It prints
``{"ready": true}`` once the model is built, then answers each request line
``{"warmup": W, "repeats": R, "min_time_s": T}`` with ``{"times": [...]}``: one mean forward time
per repeat, each repeat running forwards for at least ``T`` seconds, over many duty cycles. The
parent duty-cycles this process to emulate a slower clock, so nothing but the forwards runs here.
JSON lines on pipes, never pickle.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from edgesplit.core import zoo


def main(argv: list[str]) -> None:
    name, threads = argv[0], int(argv[1])
    torch.set_num_threads(threads)
    model = zoo.build_model(name)
    x = zoo.sample_input(name)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        times = []
        with torch.inference_mode():
            for i in range(request["warmup"] + request["repeats"]):
                began = time.perf_counter()
                count = 0
                while (elapsed := time.perf_counter() - began) < request["min_time_s"] or not count:
                    model(x)
                    count += 1
                if i >= request["warmup"]:
                    times.append(elapsed / count)
        print(json.dumps({"times": times}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
