"""How soon the edge offloads again after the cloud restarts behind an emulated link.

    python benchmarks/bench_reconnect.py [--model alexnet] [--restarts 3] [--retry-s 2]

A real cloud behind the link relay, a real edge inferring every ``--interval`` seconds. Each
round kills the cloud (SIGKILL), starts it again and records, on the wall clock: how long the
cloud took to answer ``/v2/health/ready`` (polled every 50 ms beside the edge), and how long
after that the edge's first offload succeeded. The edge re-checks the cloud every ``--retry-s``
and only between inferences, so the wait after readiness should stay within one re-check
interval plus one inference on the edge.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import threading
import time

import httpx

from edgesplit.core import zoo
from edgesplit.core.planning import Objective
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.edge.runtime import EdgeRuntime, Timing
from edgesplit.edge.sensors import FixedClock
from edgesplit.testbed.link import LinkEmulator
from edgesplit.testbed.processes import free_port


def launch(port: int, model: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "edgesplit.cli", "cloud", "serve", "--port",
                             str(port), "--models", model, "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str, timeout_s: float = 300) -> float:
    """Poll readiness every 50 ms; the monotonic time it first answered ready."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).json().get("ready") is True:
                return time.monotonic()
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError("the cloud did not become ready")


def one_restart(cloud: subprocess.Popen[bytes], port: int, model: str, edge: EdgeRuntime,
                interval_s: float) -> tuple[subprocess.Popen[bytes], float, float, int]:
    """(the new cloud, start-up seconds, ready to first offload seconds, local inferences)."""
    x = zoo.sample_input(model)
    cloud.send_signal(signal.SIGKILL)
    cloud.wait()
    killed = time.monotonic()
    cloud = launch(port, model)
    ready: list[float] = []
    poller = threading.Thread(target=lambda: ready.append(wait_ready(
        f"http://127.0.0.1:{port}")), daemon=True)
    poller.start()
    local = 0
    while True:
        slot = time.monotonic()
        if edge.infer(x).measurement.finished == "cloud":
            offloaded = time.monotonic()
            break
        local += 1
        time.sleep(max(0.0, interval_s - (time.monotonic() - slot)))
    poller.join()
    return cloud, ready[0] - killed, offloaded - ready[0], local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--retry-s", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    port = free_port()
    cloud = launch(port, args.model)
    wait_ready(f"http://127.0.0.1:{port}")
    rows = []
    with LinkEmulator("127.0.0.1", port, rtt_ms=10, burst_bytes=4096) as link:
        options = EdgeOptions(args.model, f"http://127.0.0.1:{link.port}",
                              objective=Objective("cost", edge="rent"),  # always offloads
                              timing=Timing(retry_s=args.retry_s))
        with build_runtime(options, clock=FixedClock(2.0)) as edge:
            edge.infer(zoo.sample_input(args.model))
            for _ in range(args.restarts):
                cloud, start_s, gap_s, local = one_restart(cloud, port, args.model, edge,
                                                           args.interval)
                rows.append((start_s, gap_s, local))
    cloud.terminate()
    cloud.wait()
    print(f"{args.model} behind the link relay, edge re-checks every {args.retry_s:g} s, "
          f"infers every {args.interval:g} s\n")
    print("| restart | cloud ready after kill (s) | ready to first offload (s) | "
          "inferences on the edge meanwhile |\n|---|---|---|---|")
    for i, (start_s, gap_s, local) in enumerate(rows, 1):
        print(f"| {i} | {start_s:.2f} | {gap_s:.2f} | {local} |")
    gaps = [gap for _, gap, _ in rows]
    print(f"\nmedian ready to first offload {statistics.median(gaps):.2f} s, "
          f"{statistics.median(gaps) / args.retry_s:.2f}x the re-check interval "
          f"(worst {max(gaps):.2f} s)")


if __name__ == "__main__":
    main()
