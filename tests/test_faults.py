"""Faults between a real edge runtime and a real cloud, injected through the link emulator.

Every inference must complete with the right answer, for the reason the fault gives (its
deadline, a reset, a refusal: read from the edge's own log, never from a stopwatch, so a busy
machine cannot fail them); the edge must resume offloading when the cloud is back (its retry
interval passes on a hand-moved clock, not in a sleep); the log must hold one intact row per
inference; and the server must give back what it takes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import torch

from edgesplit.core import zoo
from edgesplit.core.planning import Objective
from edgesplit.core.profiles import Profile
from edgesplit.core.splitting import SplitModel
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.client import CloudClient
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.edge.measurements import read_measurements
from edgesplit.edge.runtime import EdgeRuntime, InferenceResult, Timing
from edgesplit.edge.sensors import FixedClock, Timebase
from edgesplit.testbed.link import LinkEmulator
from edgesplit.testbed.processes import CloudProcess, free_port
from edgesplit.wire.codecs import encode_tensor
from edgesplit.wire.protocol import encode_request

from .helpers import ManualClock, SetLink, wait_until

SplitFactory = Callable[[str], SplitModel]
Faulty = tuple[CloudProcess, LinkEmulator, EdgeRuntime, ManualClock]


@pytest.fixture
def faulty(split_model: SplitFactory, alexnet_profile: Profile,
           tmp_path: Path) -> Iterator[Faulty]:
    """AlexNet on a rented edge that offloads its raw input (cost strategy) through a relay."""
    with CloudProcess(models="alexnet") as cloud, \
            LinkEmulator("127.0.0.1", cloud.port, burst_bytes=4096) as link:
        # The cloud's first AlexNet tail sets up its kernels, which can take longer than the
        # edge's one-second minimum deadline on a busy machine: warm it first.
        x = zoo.sample_input("alexnet")
        with CloudClient(cloud.url) as client:
            client.infer("alexnet", 0, [encode_tensor(x, name="x")], deadline_s=60)
        options = EdgeOptions("alexnet", f"http://127.0.0.1:{link.port}",
                              objective=Objective("cost", edge="rent"),
                              timing=Timing(retry_s=0.5), log_dir=tmp_path)
        clock = ManualClock()
        edge = build_runtime(options, split=split_model("alexnet"), profile=alexnet_profile,
                             link=SetLink(bandwidth_kbps=100_000, rtt_ms=1),
                             clock=FixedClock(2.0), timebase=Timebase(monotonic=clock))
        with edge:
            yield cloud, link, edge, clock


def check(result: InferenceResult, split: SplitModel, reason: str) -> None:
    """Finished on the edge, with the right answer, for ``reason`` (a regular expression)."""
    m = result.measurement
    assert torch.allclose(result.output, split(zoo.sample_input("alexnet")), atol=1e-4)
    assert m.finished == "edge"
    assert re.search(reason, m.fallback), (reason, m.fallback)


def rows_are_intact(log_dir: Path, count: int) -> None:
    assert [m.seq for m in read_measurements(log_dir)] == list(range(1, count + 1))


def fault_then_recovery(faulty: Faulty, split: SplitModel, inject: Callable[[], None],
                        clear: Callable[[], None], reason: str, log_dir: Path) -> None:
    """Offload, break something, check the edge finished alone and why, mend it, offload."""
    _, _, edge, clock = faulty
    x = zoo.sample_input("alexnet")
    assert edge.infer(x).measurement.finished == "cloud"
    inject()
    check(edge.infer(x), split, reason)
    clear()
    clock.advance(edge.timing.retry_s)  # the edge's retry interval passes
    assert edge.infer(x).measurement.finished == "cloud"
    rows_are_intact(log_dir, 3)


def test_a_cloud_answering_5xx(faulty: Faulty, split_model: SplitFactory,
                               tmp_path: Path) -> None:
    link = faulty[1]
    fault_then_recovery(faulty, split_model("alexnet"), lambda: link.set_http_error(503),
                        lambda: link.set_http_error(None), "503", tmp_path)


def drop_after(link: LinkEmulator, nbytes: int) -> threading.Thread:
    """Cut every connection through ``link`` once ``nbytes`` went up (an event, not a time)."""

    def watch() -> None:
        while link.bytes_up < nbytes:
            time.sleep(0.01)
        link.drop_connections()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_connection_reset_halfway_through_the_body(faulty: Faulty, split_model: SplitFactory,
                                                     tmp_path: Path) -> None:
    _, link, edge, _ = faulty
    link.set_rate_kbps(500)  # the raw input (602 KB) takes ten seconds to go up
    edge.link.bandwidth_kbps = 500  # the edge knows: its deadline is about half a minute
    dropper = drop_after(link, 100_000)
    result = edge.infer(zoo.sample_input("alexnet"))
    dropper.join(timeout=60)
    # The reset ended the wait, not the deadline (about half a minute away).
    check(result, split_model("alexnet"),
          "cannot reach the cloud.*(reset by peer|Broken pipe|[Dd]isconnected)")
    assert link.bytes_up < 600_000  # it really was cut off halfway
    rows_are_intact(tmp_path, 1)


def test_bandwidth_dropping_to_nearly_nothing(faulty: Faulty, split_model: SplitFactory,
                                              tmp_path: Path) -> None:
    link = faulty[1]
    # The edge still believes 100 Mbit/s: its deadline is the one-second minimum.
    fault_then_recovery(faulty, split_model("alexnet"), lambda: link.set_rate_kbps(1),
                        lambda: link.set_rate_kbps(None),
                        # the edge's deadline, or httpx's read timeout set to the same second
                        r"did not answer within 1\.00 s|ReadTimeout",
                        tmp_path)


def test_a_restarted_cloud_takes_the_first_offload_once_it_is_ready(
        faulty: Faulty, split_model: SplitFactory, tmp_path: Path) -> None:
    """While the cloud is down or loading its models its port is closed, so the relay resets
    every connection the edge opens (httpx: ConnectError or ReadError, [Errno 104]); the edge
    finishes alone and re-checks readiness at every inference here. The first offload after
    the cloud answers ready, one re-check interval later, must succeed: no connection from
    before the outage is reused."""
    cloud, _, edge, now = faulty
    split = split_model("alexnet")
    x = zoo.sample_input("alexnet")
    assert edge.infer(x).measurement.finished == "cloud"  # a kept-alive connection, then...
    cloud.kill()
    down = [edge.infer(x)]
    cloud.launch()
    give_up = time.monotonic() + 180  # a generous bound on an event, not a phase length
    while not cloud.ready():
        assert time.monotonic() < give_up, "the restarted cloud never became ready"
        now.advance(edge.timing.retry_s)
        down.append(edge.infer(x))
    check(down[0], split, "cannot reach the cloud")
    for result in down[1:-1]:
        check(result, split, "")
    # The last one's re-check raced this loop's: the cloud may already have answered it.
    assert torch.allclose(down[-1].output, split(x), atol=1e-4)
    # The restarted cloud's first AlexNet tail sets up its kernels (see the fixture).
    with CloudClient(cloud.url) as client:
        client.infer("alexnet", 0, [encode_tensor(x, name="x")], deadline_s=60)
    now.advance(edge.timing.retry_s)
    first = edge.infer(x).measurement
    assert first.finished == "cloud", first.fallback
    rows_are_intact(tmp_path, len(down) + 2)


@pytest.mark.parametrize("url", ["http://cloud.invalid:8000", "refused"])
def test_an_unresolvable_or_refusing_cloud(url: str, split_model: SplitFactory,
                                           alexnet_profile: Profile, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}" if url == "refused" else url
    split = split_model("alexnet")
    edge = build_runtime(EdgeOptions("alexnet", url, objective=Objective("cost", edge="rent"),
                                     log_dir=tmp_path), split=split, profile=alexnet_profile)
    with edge:
        results = [edge.infer(zoo.sample_input("alexnet")) for _ in range(3)]
    check(results[0], split, "cannot reach the cloud")
    for result in results[1:]:
        check(result, split, "")
    rows_are_intact(tmp_path, 3)


def process_usage(pid: int) -> tuple[int, int, int]:
    """(open file descriptors, threads, resident kB) of a process, once it has closed every
    connection its clients closed (it notices a close a moment after the client makes it)."""
    server = psutil.Process(pid)
    for _ in range(200):  # up to ~20 s: generous on a busy machine
        if all(c.status == psutil.CONN_LISTEN for c in server.net_connections("tcp")):
            break
        time.sleep(0.1)
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task")), rss


async def hammer(url: str, bodies: list[tuple[bytes, dict[str, str]]], total: int,
                 concurrency: int = 8) -> dict[int, int]:
    statuses: dict[int, int] = {}
    queue = iter(range(total))
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def worker() -> None:
            for i in queue:
                content, headers = bodies[i % len(bodies)]
                response = await client.post("/v2/models/mnist_cnn/infer", content=content,
                                             headers=headers)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def test_the_server_frees_what_it_takes_over_10k_requests(split_model: SplitFactory) -> None:
    split = split_model("mnist_cnn")
    x = zoo.sample_input("mnist_cnn")
    bodies = [encode_request([encode_tensor(t, name=spec.name) for t, spec in
                              zip(split.head(x, sp), split.split_points[sp].tensors,
                                  strict=True)], {"split_point": sp}) for sp in range(10)]
    bodies.append((b"garbage", {}))  # errors take their own paths: they must not leak either
    bodies.append(encode_request([encode_tensor(torch.zeros(1, 3))], {"split_point": 4}))
    with CloudProcess(models="mnist_cnn") as server:
        assert server.process is not None
        # Warm up every path, and every lazily grown pool (torch's, the servers' threads) to
        # more requests at once than the measured run sends, which a busy machine can pile up.
        asyncio.run(hammer(server.url, bodies, 1000, concurrency=32))
        before = process_usage(server.process.pid)
        statuses = asyncio.run(hammer(server.url, bodies, 10_000))
        after = process_usage(server.process.pid)
    assert sum(statuses.values()) == 10_000
    assert statuses == {200: 8334, 400: 1666}  # 10 of every 12 bodies are valid
    fds, threads, rss = (a - b for a, b in zip(after, before, strict=True))
    assert fds <= 2 and threads <= 0, (before, after)
    assert rss < 30_000, f"resident memory grew by {rss} kB over 10,000 requests"


def pending(url: str) -> float:
    """Requests the server counts as running or waiting (its /metrics)."""
    found = re.search(r"^edgesplit_pending_requests (\S+)$",
                      httpx.get(f"{url}/metrics", timeout=30).text, re.MULTILINE)
    assert found, "no pending-requests gauge in /metrics"
    return float(found.group(1))


def test_sigterm_drains_requests_in_flight() -> None:
    batch = torch.cat([zoo.sample_input("alexnet")] * 8)
    content, headers = encode_request([encode_tensor(batch, name="x")], {"split_point": 0})
    statuses: list[int] = []
    with CloudProcess("--workers", "1", models="alexnet") as server:  # stopped even on failure
        assert server.process is not None

        def offload() -> None:
            response = httpx.post(f"{server.url}/v2/models/alexnet/infer", content=content,
                                  headers=headers, timeout=60)
            statuses.append(response.status_code)

        threads = [threading.Thread(target=offload) for _ in range(4)]
        for thread in threads:
            thread.start()
        # All four are in (running, waiting, or already answered on a slow client): an event.
        wait_until(lambda: pending(server.url) + len(statuses) >= 4, "four requests in")
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        # uvicorn drains, then re-raises the signal so a supervisor sees why it ended.
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
        assert statuses == [200, 200, 200, 200]
        with pytest.raises(httpx.ConnectError):  # and nothing new gets in
            httpx.get(f"{server.url}/v2/health/live")


class WrongCloud(threading.Thread):
    """A cloud that answers 200 with nonsense: the part of the world the edge cannot trust."""

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.answer = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}"
                       "Connection: close\r\n\r\n").encode() + body

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                found = re.search(rb"(?i)content-length: (\d+)", head)
                length = int(found.group(1)) if found else 0
                while len(rest) < length:
                    rest += conn.recv(65536)
                conn.sendall(self.answer)


def oip_answer(outputs: list[dict[str, object]],
               parameters: dict[str, object]) -> tuple[bytes, dict[str, str]]:
    return json.dumps({"model_name": "alexnet", "outputs": outputs,
                       "parameters": parameters}).encode().replace(b'"NaN"', b"NaN"), {
        "content-type": "application/json"}


@pytest.mark.parametrize(("answer", "reason"), [
    (oip_answer([], {}), "malformed"),
    (oip_answer([{"name": "output", "shape": [1, 1000], "datatype": "FP32",
                  "data": [0.0] * 1000}], {"cloud_s": "NaN", "layer_times_s": []}), "malformed"),
    (oip_answer([{"name": "output", "shape": [1, 7], "datatype": "FP32", "data": [0.0] * 7}],
                {"cloud_s": 0.01, "layer_times_s": [0.01] * 19}), "not this model's output"),
    (oip_answer([{"name": "output", "shape": [1, 1000], "datatype": "FP32",
                  "data": [0.0] * 1000}], {"cloud_s": 0.01, "layer_times_s": [0.01] * 50}),
     "timed 50 layers"),
    ((b"{not json", {"content-type": "application/json"}), "malformed"),
    ((b"\x00" * 64, {"inference-header-content-length": "9999"}), "malformed"),
])
def test_a_cloud_that_answers_nonsense(answer: tuple[bytes, dict[str, str]], reason: str,
                                       split_model: SplitFactory, alexnet_profile: Profile,
                                       tmp_path: Path) -> None:
    wrong = WrongCloud(*answer)
    wrong.start()
    split = split_model("alexnet")
    options = EdgeOptions("alexnet", f"http://127.0.0.1:{wrong.port}",
                          objective=Objective("cost", edge="rent"), log_dir=tmp_path)
    edge = build_runtime(options, split=split, profile=alexnet_profile,
                         link=LinkEstimator(bandwidth_kbps=100_000, rtt_ms=1))
    with edge:
        results = [edge.infer(zoo.sample_input("alexnet")) for _ in range(2)]
    wrong.sock.close()
    check(results[0], split, reason)
    check(results[1], split, "")
    assert math.isfinite(edge.link.rtt_ms) and math.isfinite(edge.link.bandwidth_kbps)
    rows_are_intact(tmp_path, 2)
