"""A real edge against a cloud that lies: every answer is checked before it is believed.

The lying cloud is a real HTTP server on a loopback port that answers readiness checks truthfully
and inference requests with whatever the test hands it: NaN, a decompression bomb, an endless
stream, a slow drip, outputs of the wrong shape or dtype, timings of 1e300 seconds. The edge must
finish such inferences itself with the right answer and the reason in its log, decode nothing
larger than the model's output, learn nothing of the link from a failed exchange, and bound what
it learns and bills from the cloud's timings.
"""

from __future__ import annotations

import io
import json
import logging
import math
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard

from edgesplit.core import zoo
from edgesplit.core.cost import cost_usd
from edgesplit.core.planning import Objective
from edgesplit.core.profiles import Profile
from edgesplit.core.splitting import SplitModel
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.client import CloudClient, bounded_timings
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.edge.measurements import read_measurements
from edgesplit.edge.runtime import EdgeRuntime, InferenceResult, Timing
from edgesplit.edge.sensors import FixedClock
from edgesplit.errors import CloudUnavailable

from .helpers import ManualClock

SplitFactory = Callable[[str], SplitModel]
Answer = Callable[[socket.socket], None]
MODEL = "mnist_cnn"  # 9 layers, 10 outputs: quick on both sides
SLACK_S = 0.5
SPLIT_0 = Objective("cost", edge="rent")  # the edge's time is dear: send the raw input
SPLIT_N = Objective("cost")  # an owned edge is free: run everything, send the result


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


def binary(outputs: list[tuple[bytes, list[int], str, dict]], parameters: dict) -> bytes:
    """An OIP binary answer: each output's bytes after the JSON header."""
    header = {"model_name": MODEL, "parameters": parameters, "outputs": [
        {"name": f"output{i}", "shape": shape, "datatype": datatype,
         "parameters": extra | {"binary_data_size": len(data)}}
        for i, (data, shape, datatype, extra) in enumerate(outputs)]}
    head = json.dumps(header).encode()
    return http(head + b"".join(data for data, *_ in outputs),
                {"inference-header-content-length": str(len(head)),
                 "content-type": "application/octet-stream"})


def json_answer(values: list[float], shape: list[int], parameters: dict) -> bytes:
    body = json.dumps({"model_name": MODEL, "parameters": parameters, "outputs": [
        {"name": "output", "shape": shape, "datatype": "FP32", "data": values}]})
    return http(body.encode(), {"content-type": "application/json"})


def fixed(answer: bytes) -> Answer:
    return lambda conn: conn.sendall(answer)


def fp32(values: np.ndarray) -> bytes:
    return values.astype("<f4").tobytes()


@pytest.fixture(scope="module")
def mnist_quick_profile(split_model: SplitFactory) -> Profile:
    from edgesplit.measuring.profiler import profile_model

    return profile_model(MODEL, repeats=1, warmup=1, clocks_ghz=(), split=split_model(MODEL))


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
                             clock=FixedClock(2.0), monotonic=now)
        made.append((edge, cloud))
        make.clouds.append(cloud)  # type: ignore[attr-defined]
        return edge, now

    make.clouds = []  # type: ignore[attr-defined]
    yield make
    for edge, cloud in made:
        edge.close()
        cloud.close()


def finished_alone(result: InferenceResult, split: SplitModel, reason: str) -> None:
    """The edge answered right, by itself, within its deadline plus twice its own time for
    the whole model and some slack, and logged why."""
    x = zoo.sample_input(MODEL)
    began = time.perf_counter()
    expected = split(x)
    local_s = time.perf_counter() - began
    m = result.measurement
    assert m.finished == "edge", m
    assert reason in m.fallback, m.fallback
    assert torch.allclose(result.output, expected, atol=1e-5)
    assert m.prediction == 2  # the sample digit
    assert m.latency_s <= m.deadline_s + 2 * local_s + SLACK_S, (m.latency_s, m.deadline_s)


# -- issue 7: alive is not ready --------------------------------------------------------------

def test_the_edge_offloads_again_only_once_the_cloud_is_ready(
        edge_for, split_model: SplitFactory) -> None:
    """A cloud that answers liveness while it is still loading would fail the offload that
    trusted it: the edge waits for readiness."""
    split = split_model(MODEL)
    truth = fp32(split(zoo.sample_input(MODEL)).detach().numpy())
    edge, now = edge_for(fixed(http(b"not an answer")))
    cloud = edge_for.clouds[-1]
    assert edge.infer(zoo.sample_input(MODEL)).measurement.finished == "edge"
    cloud.ready = False  # restarted: alive, still loading
    cloud.answer = fixed(binary([(truth, [1, 10], "FP32", {})], timings(9)))
    for _ in range(3):
        now.advance(edge.timing.retry_s)
        m = edge.infer(zoo.sample_input(MODEL)).measurement
        assert m.finished == "edge" and "not ready" in m.fallback
    assert cloud.inferences == 1  # no offload was tried on a cloud that was not ready
    cloud.ready = True
    now.advance(edge.timing.retry_s)
    assert edge.infer(zoo.sample_input(MODEL)).measurement.finished == "cloud"
    assert cloud.inferences == 2


# -- item 7: NaN and infinity -----------------------------------------------------------------

@pytest.mark.parametrize("objective", [SPLIT_0, SPLIT_N], ids=["split 0", "split N"])
@pytest.mark.parametrize("wire", ["binary", "json"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_nan_or_infinity_from_the_cloud_is_refused(
        bad: float, wire: str, objective: Objective, edge_for, split_model: SplitFactory,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    split = split_model(MODEL)
    values = np.zeros(10, dtype=np.float32)
    values[0] = bad  # class 0 "wins" if the edge believes it
    layers = 9 if objective is SPLIT_0 else 0
    answer = (binary([(fp32(values), [1, 10], "FP32", {})], timings(layers)) if wire == "binary"
              else json_answer(values.tolist(), [1, 10], timings(layers)))
    edge, _ = edge_for(fixed(answer), objective)
    with caplog.at_level(logging.WARNING, logger="edgesplit.edge.runtime"):
        result = edge.infer(zoo.sample_input(MODEL))
    assert result.measurement.split_point == (0 if objective is SPLIT_0 else 9)
    finished_alone(result, split, "NaN or infinity")
    assert "NaN or infinity" in caplog.text
    [row] = read_measurements(tmp_path)
    assert row.finished == "edge" and "NaN or infinity" in row.fallback


# -- what a right answer looks like -----------------------------------------------------------

ZEROS = fp32(np.zeros(10))


@pytest.mark.parametrize(("outputs", "why"), [
    ([(np.zeros(10).astype("<f8").tobytes(), [1, 10], "FP64", {})], "[1, 10] FP64"),
    ([(ZEROS, [1, 10], "FP32", {}), (ZEROS, [1, 10], "FP32", {})], "2 outputs"),
    ([(fp32(np.zeros(11)), [1, 11], "FP32", {})], "[1, 11]"),
    ([(fp32(np.zeros(20)), [2, 10], "FP32", {})], "[2, 10]"),
    ([(fp32(np.zeros(10)), [1, 2, 5], "FP32", {})], "[1, 2, 5] FP32"),
    ([(ZEROS, [10], "FP32", {})], "[10] FP32"),
    ([(np.zeros(10, dtype=np.int32).tobytes(), [1, 10], "INT32", {})], "INT32"),
], ids=["float64", "two outputs", "wrong shape", "wrong batch", "same size, other shape",
        "no batch", "int32"])
def test_an_answer_that_is_not_the_models_output_is_refused(
        outputs: list, why: str, edge_for, split_model: SplitFactory) -> None:
    edge, _ = edge_for(fixed(binary(outputs, timings(9))))
    result = edge.infer(zoo.sample_input(MODEL))
    # Refused before decoding when larger than the output, after it when merely different.
    finished_alone(result, split_model(MODEL), "the cloud's answer")
    assert why in result.measurement.fallback


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
def test_a_compressed_answer_bomb_is_never_inflated(variant: str, bomb: bytes, edge_for,
                                                     split_model: SplitFactory) -> None:
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
def test_a_huge_answer_is_cut_and_teaches_nothing(answer: Answer, edge_for,
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
        edge_for, split_model: SplitFactory) -> None:
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


# -- item 10: the cloud's timings -------------------------------------------------------------

@pytest.mark.parametrize("cloud_s", [1e300, "1e300", 3600.0])
def test_the_clouds_timings_are_bounded_by_what_the_edge_saw(
        cloud_s: object, edge_for, split_model: SplitFactory) -> None:
    split = split_model(MODEL)
    x = zoo.sample_input(MODEL)
    truth = split(x).detach().numpy()
    answer = binary([(fp32(truth), [1, 10], "FP32", {})],
                    {"cloud_s": cloud_s, "layer_times_s": [1e300] * 9})
    edge, _ = edge_for(fixed(answer))
    predictor = edge.planner.predictor
    cloud_before = sum(predictor.cloud_layer_s_)
    result = edge.infer(x)
    m = result.measurement
    assert m.finished == "cloud" and m.prediction == 2
    assert 0 <= m.cloud_s <= m.latency_s
    assert m.cost_usd <= cost_usd(m.latency_s, m.latency_s, m.sent_bytes, SPLIT_0.edge,
                                  SPLIT_0.prices)
    # What the predictor learned of the cloud is bounded by the round trip too.
    assert sum(predictor.cloud_layer_s_) <= cloud_before + m.latency_s


@pytest.mark.parametrize("parameters", [
    {"cloud_s": -1.0, "layer_times_s": [0.001] * 9},
    {"cloud_s": 0.001, "layer_times_s": [-0.001] * 9},
    {"cloud_s": 10 ** 400, "layer_times_s": [0.001] * 9},
    {"cloud_s": 0.001, "layer_times_s": ["soon"] * 9},
    {"cloud_s": 0.001, "layer_times_s": 7},
], ids=["negative", "negative layer", "too large for a float", "text", "not a list"])
def test_timings_that_are_not_times_are_refused(parameters: dict, edge_for,
                                                split_model: SplitFactory) -> None:
    edge, _ = edge_for(fixed(binary([(ZEROS, [1, 10], "FP32", {})], parameters)))
    finished_alone(edge.infer(zoo.sample_input(MODEL)), split_model(MODEL), "malformed")


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
