"""What attacks cost the cloud: health latency while endless headers stream in, and the memory
of held uploads and large JSON bodies.

    python benchmarks/bench_attacks.py [--header-mib 128] [--requests 400]

Starts ``edgesplit cloud serve`` (mnist_cnn and alexnet, a 16 MiB budget for bodies in flight)
on a loopback port. Health latency is measured quiet and then, in the same run, while one
attacker streams one endless header value after another (each cut at the server's 64 KiB head
limit; it reconnects) until ``--header-mib`` MiB have gone out. Memory is the server's resident
set (``VmRSS``, or its peak ``VmHWM``) from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx

from _server import serving

MIB = 1024 * 1024


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith(field))) / 1024


def health_latencies(url: str, requests: int) -> list[float]:
    times = []
    with httpx.Client(timeout=120) as client:
        for _ in range(requests):
            began = time.perf_counter()
            client.get(f"{url}/v2/health/live").raise_for_status()
            times.append(time.perf_counter() - began)
    return times


def stream_headers(port: int, total: int, sent: list[int], stop: threading.Event) -> None:
    """Endless header values, reconnecting whenever the server cuts one, until ``total``."""
    chunk = b"a" * 65536
    while sent[0] < total and not stop.is_set():
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                while sent[0] < total:
                    sock.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                sent[1] += 1  # one cut


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    return (f"median {statistics.median(ordered) * 1e3:.2f} ms, "
            f"p99 {ordered[int(len(ordered) * 0.99) - 1] * 1e3:.2f} ms, "
            f"max {ordered[-1] * 1e3:.1f} ms")


def header_attack(port: int, url: str, pid: int, header_mib: int, requests: int) -> None:
    quiet = health_latencies(url, requests)
    before = memory_mib(pid)
    sent, stop = [0, 0], threading.Event()
    attacker = threading.Thread(target=stream_headers, args=(port, header_mib * MIB, sent, stop))
    attacker.start()
    attacked: list[float] = []
    while attacker.is_alive():
        attacked += health_latencies(url, 20)
    attacker.join()
    print(f"health, quiet ({requests} requests):        {summary(quiet)}")
    print(f"health, while {sent[0] / MIB:.0f} MiB of header streamed "
          f"({len(attacked)} requests, {sent[1]} connections cut): {summary(attacked)}")
    print(f"server memory grew {memory_mib(pid) - before:.1f} MiB during the header attack")


def held_uploads(port: int, pid: int, count: int, size: int) -> None:
    before = memory_mib(pid)
    socks = []
    head = (f"POST /v2/models/mnist_cnn/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
            "Inference-Header-Content-Length: 20\r\n\r\n").encode()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(head)
        with contextlib.suppress(OSError):  # refused mid-upload: the server closed it
            sock.sendall(b"0" * (size - 1))
        socks.append(sock)
    grew = memory_mib(pid) - before
    for sock in socks:
        sock.close()
    print(f"{count} uploads of {size / MIB:.0f} MiB held open ({count * size / MIB:.0f} MiB): "
          f"server memory grew {grew:.1f} MiB (budget 16 MiB)")


def json_peak(url: str, pid: int) -> None:
    shape = [6, 3, 224, 224]
    data = ",".join(["0.5"] * (6 * 3 * 224 * 224 - 1))  # one short: parsed, then refused
    body = (f'{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "FP32", '
            f'"data": [{data}]}}]}}').encode()
    peak = memory_mib(pid, "VmHWM")
    threads = [threading.Thread(target=lambda: httpx.post(
        f"{url}/v2/models/alexnet/infer", content=body, timeout=120)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grew = memory_mib(pid, "VmHWM") - peak
    print(f"4 JSON bodies of {len(body) / MIB:.1f} MiB at once: peak memory grew {grew:.1f} MiB "
          f"({grew / (4 * len(body) / MIB):.1f}x their size)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header-mib", type=int, default=128)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    os.environ["EDGESPLIT_MAX_BODIES_MB"] = "16"
    with serving("mnist_cnn,alexnet", "--max-body-mb", "9") as (process, url):
        port = int(url.rsplit(":", 1)[1])
        header_attack(port, url, process.pid(), args.header_mib, args.requests)
        held_uploads(port, process.pid(), 24, 8 * MIB)
        json_peak(url, process.pid())


if __name__ == "__main__":
    main()
