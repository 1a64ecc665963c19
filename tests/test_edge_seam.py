"""The edge against a cloud behind its transport seam: fallback, deadlines and lying answers,
exactly and in the test's own process (``httpx.MockTransport``: no socket, no server).

It is the same runtime, client and checks as over the network; only the answers come from the
test. What needs a real socket stays where it is: an endless or dripping stream and a compressed
bomb (tests/test_lying_cloud.py), a cloud killed or cut mid-request (tests/test_faults.py,
tests/test_runtime.py).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgesplit.core import zoo
from edgesplit.core.cost import cost_usd
from edgesplit.core.planning import Objective
from edgesplit.core.predictors import ProfilePredictor
from edgesplit.core.profiles import Profile
from edgesplit.core.splitting import SplitModel
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.edge.measurements import read_measurements
from edgesplit.edge.runtime import EdgeRuntime, Timing
from edgesplit.edge.sensors import FixedClock, Timebase

from .helpers import ManualClock, finished_alone

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)

SplitFactory = Callable[[str], SplitModel]
EdgeFor = Callable[..., tuple[EdgeRuntime, ManualClock]]
Answer = Callable[[httpx.Request], httpx.Response]
MODEL = "mnist_cnn"  # 9 layers, 10 outputs: quick on both sides
SPLIT_0 = Objective("cost", edge="rent")  # the edge's time is dear: send the raw input
SPLIT_N = Objective("cost")  # an owned edge is free: run everything, send the result


class Wire(httpx.SyncByteStream):
    """An answer's body as it comes off a connection: a stream the client reads (and caps), not
    content already read."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body


def respond(status: int, body: bytes, content_type: str = "application/json",
            headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": content_type} | (headers or {}),
                          stream=Wire(body))


class Cloud:
    """A cloud in the edge's process: alive, ready while ``ready`` is set, and answering every
    inference request with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.ready = True
        self.inferences = 0
        self.lookups = 0  # GET /v2/models/{model}: its metadata

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/health/live":
            return respond(200, b'{"live": true}')
        if request.url.path == "/v2/health/ready":
            return respond(200, json.dumps({"ready": self.ready}).encode())
        self.inferences += request.url.path.endswith("/infer")
        self.lookups += request.method == "GET"
        return self.answer(request)


def timings(layers: int, cloud_s: object = 0.001) -> dict[str, object]:
    return {"cloud_s": cloud_s, "layer_times_s": [0.0001] * layers}


def fp32(values: np.ndarray) -> bytes:
    return values.astype("<f4").tobytes()


def binary(outputs: list[tuple[bytes, list[int], str]], parameters: dict[str, object]) -> Answer:
    """An OIP binary answer: each output's bytes after the JSON header."""
    header = {"model_name": MODEL, "parameters": parameters, "outputs": [
        {"name": f"output{i}", "shape": shape, "datatype": datatype,
         "parameters": {"binary_data_size": len(data)}}
        for i, (data, shape, datatype) in enumerate(outputs)]}
    head = json.dumps(header).encode()
    body = head + b"".join(data for data, *_ in outputs)
    headers = {"inference-header-content-length": str(len(head))}
    return lambda request: respond(200, body, "application/octet-stream", headers)


def json_answer(values: list[float], shape: list[int], parameters: dict[str, object]) -> Answer:
    body = {"model_name": MODEL, "parameters": parameters, "outputs": [
        {"name": "output", "shape": shape, "datatype": "FP32", "data": values}]}
    return lambda request: respond(200, json.dumps(body).encode())


ZEROS = fp32(np.zeros(10))


@pytest.fixture
def edge_for(split_model: SplitFactory, mnist_quick_profile: Profile,
             tmp_path: Path) -> Iterator[Callable[..., tuple[EdgeRuntime, ManualClock]]]:
    """An edge of the MNIST CNN whose cloud is ``cloud``; its clock moves when the test says,
    and its link estimate learns as in real use (so a test can see that it learned nothing).
    The deadline is generous unless a test is about it: a busy machine must not turn a lie's
    refusal into a timeout."""
    made: list[EdgeRuntime] = []

    def make(cloud: Cloud, objective: Objective = SPLIT_0,
             min_deadline_s: float = 30.0) -> tuple[EdgeRuntime, ManualClock]:
        now = ManualClock()
        options = EdgeOptions(MODEL, "http://cloud.test", objective=objective, log_dir=tmp_path,
                              timing=Timing(retry_s=1.0, min_deadline_s=min_deadline_s))
        edge = build_runtime(options, split=split_model(MODEL), profile=mnist_quick_profile,
                             link=LinkEstimator(bandwidth_kbps=100_000, rtt_ms=1),
                             clock=FixedClock(2.0), timebase=Timebase(monotonic=now),
                             transport=httpx.MockTransport(cloud))
        made.append(edge)
        return edge, now

    yield make
    for edge in made:
        edge.close()


def the_truth(split_model: SplitFactory) -> Answer:
    """The right answer to the sample, at split point 0, truthfully timed."""
    truth = split_model(MODEL)(zoo.sample_input(MODEL)).detach().numpy()
    return binary([(fp32(truth), [1, 10], "FP32")], timings(9))


# -- fallback and deadlines --------------------------------------------------------------------

def test_a_refused_connection_or_a_5xx_is_finished_on_the_edge_then_offloading_resumes(
        edge_for: EdgeFor, split_model: SplitFactory) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    cloud = Cloud(refused)
    edge, now = edge_for(cloud)
    x = zoo.sample_input(MODEL)
    finished_alone(edge.infer(x), split_model(MODEL), "cannot reach the cloud")
    cloud.answer = lambda request: respond(503, b'{"error": "overloaded"}')
    now.advance(edge.timing.retry_s)
    finished_alone(edge.infer(x), split_model(MODEL), "overloaded")
    assert cloud.inferences == 2  # each re-check found it ready and tried again
    cloud.answer = the_truth(split_model)
    assert edge.infer(x).measurement.finished == "edge"  # within the re-check interval
    now.advance(edge.timing.retry_s)
    m = edge.infer(x).measurement
    assert (m.finished, m.top1_class, cloud.inferences) == ("cloud", 2, 3)


def test_another_version_in_the_cloud_is_said_once_per_episode_and_is_no_outage(
        edge_for: EdgeFor, split_model: SplitFactory, caplog: pytest.LogCaptureFixture) -> None:
    skew = lambda request: respond(409, b'{"error": "the cloud serves another version"}')  # noqa: E731
    cloud = Cloud(skew)
    edge, _ = edge_for(cloud)
    x = zoo.sample_input(MODEL)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # each offload is tried: a 409 does not mark the cloud down
            finished_alone(edge.infer(x), split_model(MODEL), "another version")
        cloud.answer = the_truth(split_model)
        assert edge.infer(x).measurement.finished == "cloud"
        cloud.answer = skew
        finished_alone(edge.infer(x), split_model(MODEL), "another version")
    said = [r for r in caplog.records if "another version of" in r.getMessage()]
    assert len(said) == 2 and cloud.inferences == 4 and edge.cloud_down_reason is None
    # Its versions were looked up once, not at every refusal within the retry interval.
    assert cloud.lookups == 1


def test_a_cloud_that_does_not_answer_is_given_up_at_the_deadline(
        edge_for: EdgeFor, split_model: SplitFactory) -> None:
    released = threading.Event()

    def stuck(request: httpx.Request) -> httpx.Response:
        released.wait(60)  # let go when the test ends
        return respond(503, b"")

    edge, _ = edge_for(Cloud(stuck), min_deadline_s=0.5)
    try:
        first = edge.infer(zoo.sample_input(MODEL))
        # The cloud answers ready: the timeout may be a slow link's. It bounds the estimate
        # (3,136 bytes not through in 0.5 s) and the edge re-plans instead of giving up.
        assert edge.link.bandwidth_kbps < 3136 * 8 / 0.5 / 1000 * 1.05
        assert edge.cloud_down_reason is None
        second = edge.infer(zoo.sample_input(MODEL))
        third = edge.infer(zoo.sample_input(MODEL))
    finally:
        released.set()
    m = first.measurement
    assert m.deadline_s == 0.5 and m.latency_s >= 0.5
    finished_alone(first, split_model(MODEL), "did not answer within 0.50 s")
    # A second timeout in a row, at a plan made for a slow link: the cloud is given up.
    assert second.measurement.replan in ("bandwidth", "slow link")  # re-planned
    finished_alone(second, split_model(MODEL), "did not answer within")
    finished_alone(third, split_model(MODEL), "offline: the cloud")


def test_the_edge_offloads_again_only_once_the_cloud_is_ready(
        edge_for: EdgeFor, split_model: SplitFactory) -> None:
    """A cloud that answers liveness while it is still loading would fail the offload that
    trusted it: the edge waits for readiness."""
    cloud = Cloud(lambda request: respond(200, b"not an answer"))
    edge, now = edge_for(cloud)
    assert edge.infer(zoo.sample_input(MODEL)).measurement.finished == "edge"
    cloud.ready = False  # restarted: alive, still loading
    cloud.answer = the_truth(split_model)
    for _ in range(3):
        now.advance(edge.timing.retry_s)
        m = edge.infer(zoo.sample_input(MODEL)).measurement
        assert m.finished == "edge" and "not ready" in m.fallback
    assert cloud.inferences == 1  # no offload was tried on a cloud that was not ready
    cloud.ready = True
    now.advance(edge.timing.retry_s)
    assert edge.infer(zoo.sample_input(MODEL)).measurement.finished == "cloud"
    assert cloud.inferences == 2


# -- lies: NaN and infinity ------------------------------------------------------------------

@pytest.mark.parametrize("objective", [SPLIT_0, SPLIT_N], ids=["split 0", "split N"])
@pytest.mark.parametrize("wire", ["binary", "json"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_nan_or_infinity_from_the_cloud_is_refused(
        bad: float, wire: str, objective: Objective, edge_for: EdgeFor, split_model: SplitFactory,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    values = np.zeros(10, dtype=np.float32)
    values[0] = bad  # class 0 "wins" if the edge believes it
    layers = 9 if objective is SPLIT_0 else 0
    answer = (binary([(fp32(values), [1, 10], "FP32")], timings(layers)) if wire == "binary"
              else json_answer(values.tolist(), [1, 10], timings(layers)))
    edge, _ = edge_for(Cloud(answer), objective)
    with caplog.at_level(logging.WARNING, logger="edgesplit.edge.runtime"):
        result = edge.infer(zoo.sample_input(MODEL))
    assert result.measurement.split_point == (0 if objective is SPLIT_0 else 9)
    finished_alone(result, split_model(MODEL), "NaN or infinity")
    assert "NaN or infinity" in caplog.text
    [row] = read_measurements(tmp_path)
    assert row.finished == "edge" and "NaN or infinity" in row.fallback


# -- lies: what a right answer looks like ------------------------------------------------------

@pytest.mark.parametrize(("outputs", "why"), [
    ([(np.zeros(10).astype("<f8").tobytes(), [1, 10], "FP64")], "[1, 10] FP64"),
    ([(ZEROS, [1, 10], "FP32"), (ZEROS, [1, 10], "FP32")], "2 outputs"),
    ([(fp32(np.zeros(11)), [1, 11], "FP32")], "[1, 11]"),
    ([(fp32(np.zeros(20)), [2, 10], "FP32")], "[2, 10]"),
    ([(fp32(np.zeros(10)), [1, 2, 5], "FP32")], "[1, 2, 5] FP32"),
    ([(ZEROS, [10], "FP32")], "[10] FP32"),
    ([(np.zeros(10, dtype=np.int32).tobytes(), [1, 10], "INT32")], "INT32"),
], ids=["float64", "two outputs", "wrong shape", "wrong batch", "same size, other shape",
        "no batch", "int32"])
def test_an_answer_that_is_not_the_models_output_is_refused(
        outputs: list[tuple[bytes, list[int], str]], why: str, edge_for: EdgeFor,
        split_model: SplitFactory) -> None:
    edge, _ = edge_for(Cloud(binary(outputs, timings(9))))
    result = edge.infer(zoo.sample_input(MODEL))
    # Refused before decoding when larger than the output, after it when merely different.
    finished_alone(result, split_model(MODEL), "the cloud's answer")
    assert why in result.measurement.fallback


# -- lies: the cloud's timings ------------------------------------------------------------------

@pytest.mark.parametrize("cloud_s", [1e300, "1e300", 3600.0])
def test_the_clouds_timings_are_bounded_by_what_the_edge_saw(
        cloud_s: object, edge_for: EdgeFor, split_model: SplitFactory) -> None:
    truth = split_model(MODEL)(zoo.sample_input(MODEL)).detach().numpy()
    answer = binary([(fp32(truth), [1, 10], "FP32")],
                    {"cloud_s": cloud_s, "layer_times_s": [1e300] * 9})
    edge, _ = edge_for(Cloud(answer))
    predictor = edge.planner.predictor
    assert isinstance(predictor, ProfilePredictor)
    cloud_before = sum(predictor.cloud_layer_s_)
    m = edge.infer(zoo.sample_input(MODEL)).measurement
    assert m.finished == "cloud" and m.top1_class == 2
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
def test_timings_that_are_not_times_are_refused(parameters: dict[str, object], edge_for: EdgeFor,
                                                split_model: SplitFactory) -> None:
    edge, _ = edge_for(Cloud(binary([(ZEROS, [1, 10], "FP32")], parameters)))
    finished_alone(edge.infer(zoo.sample_input(MODEL)), split_model(MODEL), "malformed")


def test_a_cloud_not_serving_a_files_name_says_the_edge_named_it_after_the_file() -> None:
    from edgesplit.edge.client import CloudClient
    from edgesplit.edge.runtime import check_cloud
    from edgesplit.errors import InvalidArgument

    def cloud(request: httpx.Request) -> httpx.Response:
        return respond(404, json.dumps(
            {"error": "model 'model' is not served here: expected one of my_net"}).encode())

    with CloudClient("http://cloud", transport=httpx.MockTransport(cloud)) as client:
        with pytest.raises(InvalidArgument) as copied:
            check_cloud(client, "model", 9, "models/my_net/3/model.pt2")
        with pytest.raises(InvalidArgument) as zoo_name:
            check_cloud(client, "alexnet", 9, "alexnet")
    assert str(copied.value) == (
        "the cloud at http://cloud does not serve 'model' (model 'model' is not served here: "
        "expected one of my_net); the edge names models/my_net/3/model.pt2 'model', after its "
        "file: copy it to NAME.pt2, NAME as the cloud serves it")
    assert str(zoo_name.value).endswith("expected one of my_net)")


def test_a_cloud_running_a_few_split_points_is_the_same_model_one_beyond_is_not() -> None:
    from edgesplit.edge.client import CloudClient
    from edgesplit.edge.runtime import check_cloud
    from edgesplit.errors import InvalidArgument

    def listing(*points: int) -> Callable[[httpx.Request], httpx.Response]:
        body = {"name": "my_net", "parameters": {"split_points": [
            {"split_point": p, "layer": f"layer{p}"} for p in points]}}
        return lambda request: respond(200, json.dumps(body).encode())

    with CloudClient("http://cloud", transport=httpx.MockTransport(listing(0, 3, 5))) as client:
        assert check_cloud(client, "my_net", 9) is None  # config.toml: split_points = [0, 3, 5]
    with (CloudClient("http://cloud", transport=httpx.MockTransport(listing(0, 12))) as client,
          pytest.raises(InvalidArgument) as other):
        check_cloud(client, "my_net", 9)
    assert str(other.value) == ("the cloud's my_net has split point 12, this edge's only 0 to 8: "
                                "they are not the same model")
