"""What attacks cost the cloud: health latency while endless headers stream in, the memory
of held uploads, large JSON and /offload bodies and unfinished heads, held connections
against a server's descriptor limit, and pipelining.

    python benchmarks/bench_attacks.py [--header-mib 128] [--requests 400] [--connections 1100]

Starts ``edgesplit cloud serve`` (mnist_cnn and alexnet, a 16 MiB budget for bodies in flight)
on a loopback port. Health latency is measured quiet and then, in the same run, while one
attacker streams one endless header value after another (each cut at the server's 64 KiB head
limit; it reconnects) until ``--header-mib`` MiB have gone out. Then ``--connections`` idle
connections are held against a second server started with 1,024 descriptors (its default
connection cap follows from that), while probes and an inference are timed; and 2,000
connections each send 9,000 header lines of ``aa:b`` without the closing blank line while an
inference is timed. Memory is the server's resident set (``VmRSS``, or its peak ``VmHWM``)
from /proc, descriptors are counted in /proc/PID/fd.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx

from _server import serving
from edgesplit.testbed.processes import CloudProcess

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


def offload_peak(port: int, pid: int) -> None:
    """Four 60 MiB base64 bodies to /offload at once (its JSON limit is 4 MiB)."""
    size = 60 * MIB
    head = (f"POST /offload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    answers: list[bytes] = []

    def one() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(head + b'{"tensor": "')
            with contextlib.suppress(OSError):  # refused: the server closed it
                for _ in range(size // 65536):
                    sock.sendall(b"A" * 65536)
            with contextlib.suppress(OSError):
                answers.append(sock.recv(200))

    peak = memory_mib(pid, "VmHWM")
    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted({a.split(b" ")[1].decode() for a in answers if a.startswith(b"HTTP/")})
    print(f"4 /offload bodies of 60 MiB at once: answered {', '.join(statuses)}; peak memory "
          f"grew {memory_mib(pid, 'VmHWM') - peak:.1f} MiB")


def pipelined(port: int, count: int = 6000) -> None:
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request * count)
        with contextlib.suppress(TimeoutError):
            while answers.count(b"HTTP/1.1 ") < count and (chunk := sock.recv(1 << 20)):
                answers += chunk
    print(f"{count} pipelined GETs of {len(request)} bytes: "
          f"{answers.count(b'HTTP/1.1 200')} answered 200, {answers.count(b'HTTP/1.1 431')} 431")


def timed_get(url: str) -> float:
    began = time.perf_counter()
    httpx.get(f"{url}/v2/health/live", timeout=30).raise_for_status()
    return time.perf_counter() - began


def held_connections(count: int) -> None:
    """``count`` idle connections against a server started with 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    server = CloudProcess(models="mnist_cnn")
    try:
        server.launch()  # the server inherits the lower limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        server.wait_ready()
        quiet = [timed_get(server.url) for _ in range(20)]
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(count)]
        held = [timed_get(server.url) for _ in range(20)]
        most = len(os.listdir(f"/proc/{server.pid()}/fd"))
        for sock in socks:
            sock.close()
    finally:
        server.stop()
    print(f"{count} idle connections held against 1,024 descriptors: {most} descriptors open; "
          f"health quiet {summary(quiet)}; while held {summary(held)} (20 probes each, all 200)")


def header_lines(port: int, url: str, pid: int, count: int = 2000) -> None:
    """``count`` connections each sending 9,000 lines of ``aa:b`` and no blank line."""
    head = b"GET /v2/health/live HTTP/1.1\r\n" + b"aa:b\r\n" * 9000
    before = memory_mib(pid)
    refused = 0
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        with contextlib.suppress(OSError):
            sock.sendall(head)
        socks.append(sock)
    during = timed_get(url)
    grew = memory_mib(pid) - before
    for sock in socks:
        with contextlib.suppress(OSError):
            refused += sock.recv(100).startswith(b"HTTP/1.1 431")
        sock.close()
    print(f"{count} heads of 9,000 'aa:b' lines: {refused} answered 431; server memory grew "
          f"{grew:.1f} MiB; a health probe meanwhile took {during * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header-mib", type=int, default=128)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--connections", type=int, default=1100)
    args = parser.parse_args()
    os.environ["EDGESPLIT_MAX_BODIES_MB"] = "16"
    with serving("mnist_cnn,alexnet", "--max-body-mb", "9") as (process, url):
        port = int(url.rsplit(":", 1)[1])
        pid = process.pid()
        header_attack(port, url, pid, args.header_mib, args.requests)
        held_uploads(port, pid, 24, 8 * MIB)
        json_peak(url, pid)
        offload_peak(port, pid)
        pipelined(port)
        header_lines(port, url, pid)
    held_connections(args.connections)


if __name__ == "__main__":
    main()
