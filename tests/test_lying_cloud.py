"""A real edge against a cloud that lies: every answer is checked before it is believed.

The lying cloud is a real HTTP server on a loopback port that answers readiness checks truthfully
and inference requests with whatever the test hands it: a decompression bomb, an endless stream, a
slow drip, a million layer times. These lies need a real socket (what arrives, and how fast, is
the point); the lies that are only a wrong body (NaN, outputs of the wrong shape or dtype, timings
of 1e300 seconds, a cloud alive but not ready) go through the edge's transport seam in
tests/test_edge_seam.py. The edge must finish such inferences itself with the right answer and
the reason in its log, decode nothing larger than the model's output and learn nothing of the
link from a failed exchange.
"""

from __future__ import annotations

import io
import json
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zstandard

from edgesplit.core import zoo
from edgesplit.core.planning import Objective
from edgesplit.core.profiles import Profile
from edgesplit.core.splitting import SplitModel
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.client import CloudClient, bounded_timings
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.edge.runtime import EdgeRuntime, Timing
from edgesplit.edge.sensors import FixedClock, Timebase
from edgesplit.errors import CloudUnavailable

from .helpers import ManualClock, finished_alone

SplitFactory = Callable[[str], SplitModel]
Answer = Callable[[socket.socket], None]
EdgeFor = Callable[..., tuple[EdgeRuntime, ManualClock]]  # the edge_for fixture
Output = tuple[bytes, list[int], str, dict[str, object]]  # bytes, shape, datatype, parameters
MODEL = "mnist_cnn"  # 9 layers, 10 outputs: quick on both sides
SPLIT_0 = Objective("cost", edge="rent")  # the edge's time is dear: send the raw input


class LyingCloud:
    """An HTTP server that is alive, ready while ``ready`` is set, and answers every inference
    request with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.ready = True
        self.health: Answer | None = None  # when set, answers every GET instead
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.inferences = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                head = self._read_request(conn)
                if self.health is not None and head.startswith(b"GET "):
                    self.health(conn)
                    return
                if head.startswith(b"GET /v2/health/live"):
                    conn.sendall(http(b'{"live": true}'))
                    return
                if head.startswith(b"GET /v2/health/ready"):
                    conn.sendall(http(json.dumps({"ready": self.ready}).encode()))
                    return
                self.inferences += 1
                self.answer(conn)
            except OSError:  # the edge gave up and closed: what a lie should get
                return

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionResetError("closed before a request")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        return head

    def close(self) -> None:
        self.sock.close()


def http(body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}Connection: close\r\n\r\n"
            ).encode() + body


def timings(layers: int, cloud_s: object = 0.001) -> dict[str, object]:
    return {"cloud_s": cloud_s, "layer_times_s": [0.0001] * layers}


def binary(outputs: list[Output], parameters: dict[str, object]) -> bytes:
    """An OIP binary answer: each output's bytes after the JSON header."""
    header = {"model_name": MODEL, "parameters": parameters, "outputs": [
        {"name": f"output{i}", "shape": shape, "datatype": datatype,
         "parameters": extra | {"binary_data_size": len(data)}}
        for i, (data, shape, datatype, extra) in enumerate(outputs)]}
    head = json.dumps(header).encode()
    return http(head + b"".join(data for data, *_ in outputs),
                {"inference-header-content-length": str(len(head)),
                 "content-type": "application/octet-stream"})


def fixed(answer: bytes) -> Answer:
    return lambda conn: conn.sendall(answer)


def fp32(values: np.ndarray) -> bytes:
    return values.astype("<f4").tobytes()


@pytest.fixture
def edge_for(split_model: SplitFactory, mnist_quick_profile: Profile,
             tmp_path: Path) -> Iterator[Callable[..., tuple[EdgeRuntime, ManualClock]]]:
    """An edge of the MNIST CNN against a lying cloud; its clock moves when the test says, and
    its link estimate learns as in real use (so a test can see that it learned nothing)."""
    made: list[tuple[EdgeRuntime, LyingCloud]] = []

    def make(answer: Answer, objective: Objective = SPLIT_0,
             min_deadline_s: float = 1.0) -> tuple[EdgeRuntime, ManualClock]:
        cloud = LyingCloud(answer)
        now = ManualClock()
        options = EdgeOptions(MODEL, cloud.url, objective=objective, log_dir=tmp_path,
                              timing=Timing(retry_s=1.0, min_deadline_s=min_deadline_s))
        edge = build_runtime(options, split=split_model(MODEL), profile=mnist_quick_profile,
                             link=LinkEstimator(bandwidth_kbps=100_000, rtt_ms=1),
                             clock=FixedClock(2.0), timebase=Timebase(monotonic=now))
        made.append((edge, cloud))
        return edge, now

    yield make
    for edge, cloud in made:
        edge.close()
        cloud.close()


ZEROS = fp32(np.zeros(10))


# -- item 8: a compressed bomb ----------------------------------------------------------------

def zstd_of_zeros(nbytes: int, *, declare_size: bool) -> bytes:
    """A small zstd frame that inflates to ``nbytes`` of zeros (made without holding them)."""
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=declare_size)
    out = io.BytesIO()
    with compressor.stream_writer(out, size=nbytes if declare_size else -1,
                                  closefd=False) as writer:
        block = bytes(1 << 23)
        for _ in range(nbytes // len(block)):
            writer.write(block)
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return zstd_of_zeros(8 << 28, declare_size=True)  # 2^28 float64: 2 GiB


@pytest.mark.parametrize("variant", ["2^28 float64 declared", "right shape, 2 GiB frame",
                                     "right shape, frame of unknown size"])
def test_a_compressed_answer_bomb_is_never_inflated(variant: str, bomb: bytes, edge_for: EdgeFor,
                                                     split_model: SplitFactory) -> None:
    outputs: list[Output]
    if variant == "2^28 float64 declared":
        outputs = [(bomb, [1 << 28], "FP64", {"compression": "zstd"})]
    elif variant == "right shape, 2 GiB frame":
        outputs = [(bomb, [1, 10], "FP32", {"compression": "zstd"})]
    else:
        outputs = [(zstd_of_zeros(1 << 30, declare_size=False), [1, 10], "FP32",
                    {"compression": "zstd"})]
    answer = binary(outputs, timings(9))
    assert len(answer) < 300_000
    edge, _ = edge_for(fixed(answer))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = edge.infer(zoo.sample_input(MODEL))
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    finished_alone(result, split_model(MODEL), "malformed")
    assert grown_kb < 100_000, f"the edge's peak memory grew by {grown_kb} kB"


# -- item 9: huge answers, and nothing learned from failures ----------------------------------

def endless(conn: socket.socket) -> None:
    """A chunked answer that never ends (until the edge hangs up)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                 b"content-type: application/octet-stream\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (1 << 20, bytes(1 << 20))
    for _ in range(2048):  # 2 GiB
        conn.sendall(chunk)


def declared_huge(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2147483648\r\n\r\n")
    for _ in range(2048):
        conn.sendall(bytes(1 << 20))


def many_layer_times(conn: socket.socket) -> None:
    conn.sendall(binary([(ZEROS, [1, 10], "FP32", {})],
                        {"cloud_s": 0.001, "layer_times_s": [0.0001] * 1_000_000}))


@pytest.mark.parametrize("answer", [endless, declared_huge, many_layer_times],
                         ids=["endless stream", "2 GiB declared", "a million layer times"])
def test_a_huge_answer_is_cut_and_teaches_nothing(answer: Answer, edge_for: EdgeFor,
                                                  split_model: SplitFactory) -> None:
    edge, now = edge_for(answer)
    link_before = (edge.link.bandwidth_kbps, edge.link.rtt_ms)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = []
    for _ in range(3):  # fail, wait out the re-check interval, try the cloud again
        results.append(edge.infer(zoo.sample_input(MODEL)))
        now.advance(edge.timing.retry_s)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    for result in results:
        finished_alone(result, split_model(MODEL), "more than the")
    assert {r.measurement.deadline_s for r in results} == {1.0}  # the deadline did not grow
    assert (edge.link.bandwidth_kbps, edge.link.rtt_ms) == link_before
    assert grown_kb < 100_000, f"the edge's peak memory grew by {grown_kb} kB"


def test_a_slow_drip_is_cut_at_the_deadline_and_teaches_nothing(
        edge_for: EdgeFor, split_model: SplitFactory) -> None:
    dripping = threading.Event()

    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n\r\n")  # within the cap
        dripping.set()
        for _ in range(60_000):
            conn.sendall(b"\0")
            time.sleep(0.02)

    edge, now = edge_for(drip, min_deadline_s=0.5)
    link_before = (edge.link.bandwidth_kbps, edge.link.rtt_ms)
    results = []
    for _ in range(2):
        results.append(edge.infer(zoo.sample_input(MODEL)))
        now.advance(edge.timing.retry_s)
    assert dripping.is_set()
    for result in results:
        finished_alone(result, split_model(MODEL), "0.50 s")
        assert result.measurement.deadline_s == 0.5
    assert (edge.link.bandwidth_kbps, edge.link.rtt_ms) == link_before


def test_bounded_timings_never_exceed_the_round_trip() -> None:
    assert bounded_timings(1e300, [1e300, 1e300], 0.2) == (0.2, [0.1, 0.1])
    assert bounded_timings(0.1, [0.06, 0.02], 0.2) == (0.1, [0.06, 0.02])  # truthful: kept
    cloud_s, layers = bounded_timings(0.1, [0.3, 0.1], 0.2)
    assert cloud_s == 0.1 and layers == pytest.approx([0.075, 0.025])
    assert bounded_timings(0.0, [0.3], 0.2) == (0.0, [0.0])


def test_a_client_without_expectations_still_caps_answers() -> None:
    cloud = LyingCloud(endless)
    try:
        with CloudClient(cloud.url, max_response_bytes=1 << 20) as client, \
                pytest.raises(CloudUnavailable, match="more than the 1048576 bytes"):
            client.infer(MODEL, 0, [], deadline_s=30)
    finally:
        cloud.close()


def test_every_answer_is_capped_not_only_inferences() -> None:
    cloud = LyingCloud(endless)
    cloud.health = endless
    try:
        with CloudClient(cloud.url) as client:
            for call in (lambda: client.ready(deadline_s=30), lambda: client.ping(deadline_s=30),
                         lambda: client.model_metadata(MODEL, deadline_s=30),
                         lambda: client.probe(1000, deadline_s=30)):
                with pytest.raises(CloudUnavailable, match="more than the"):
                    call()
    finally:
        cloud.close()
