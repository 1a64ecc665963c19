"""The cloud server as clients see it: a real uvicorn process, real HTTP."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import torch

from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.edge.client import CloudClient
from edgesplit.testbed.processes import CloudProcess
from edgesplit.wire.codecs import all_codecs, encode_tensor
from edgesplit.wire.protocol import HEADER_LENGTH, encode_request, parse_response

from .helpers import wait_until

SplitFactory = Callable[[str], SplitModel]


@pytest.fixture(params=["builtin", "ray"])
def cloud(request: pytest.FixtureRequest) -> CloudProcess:
    """Every endpoint test below runs against the built-in server and against the same app on
    Ray Serve (skipped where the ray extra is missing). Both are looked up by names of their
    own: a session fixture named like this parametrized one would be parametrized with it,
    and started anew for every test."""
    server: CloudProcess = request.getfixturevalue(
        "ray_cloud" if request.param == "ray" else "builtin_cloud")
    return server


def infer(cloud: CloudProcess, model: str, split_point: int, tensors: list[torch.Tensor],
          codec: str = "raw", names: list[str] | None = None) -> httpx.Response:
    from edgesplit.wire.codecs import parse_codec

    encoded = [encode_tensor(t, parse_codec(codec), name)
               for t, name in zip(tensors, names or ["x"] * len(tensors), strict=True)]
    body, headers = encode_request(encoded, {"split_point": split_point})
    return httpx.post(f"{cloud.url}/v2/models/{model}/infer", content=body, headers=headers,
                      timeout=30)


def output_of(response: httpx.Response) -> torch.Tensor:
    assert response.status_code == 200, response.text
    return parse_response(response.content, response.headers.get(HEADER_LENGTH))[1][0]


def test_health_and_metadata(cloud: CloudProcess) -> None:
    assert httpx.get(f"{cloud.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{cloud.url}/v2/health/ready").json() == {"ready": True}
    assert "binary_tensor_data" in httpx.get(f"{cloud.url}/v2").json()["extensions"]
    meta = httpx.get(f"{cloud.url}/v2/models/alexnet").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 1000]}]
    split_points = meta["parameters"]["split_points"]
    assert len(split_points) == 20
    assert split_points[14]["layer"] == "avgpool"
    assert split_points[14]["offload_bytes"] == 36_864
    assert split_points[14]["tensors"][0]["shape"] == [1, 256, 6, 6]
    assert httpx.get(f"{cloud.url}/v2/models/alexnet/ready").json()["ready"] is True


def test_binary_infer_matches_local_inference_with_cloud_timings(
        cloud: CloudProcess, split_model: SplitFactory) -> None:
    split = split_model("alexnet")
    x = zoo.sample_input("alexnet")
    response = infer(cloud, "alexnet", 15, list(split.head(x, 15)))
    header, outputs = parse_response(response.content, response.headers[HEADER_LENGTH])
    assert torch.allclose(outputs[0], split(x), atol=1e-5)
    parameters = header["parameters"]
    assert parameters["split_point"] == 15
    assert len(parameters["layer_times_s"]) == 4  # layers 16..19
    assert 0 < parameters["compute_s"] <= parameters["cloud_s"]


def test_json_infer_with_json_output(cloud: CloudProcess, split_model: SplitFactory) -> None:
    split = split_model("mnist_cnn")
    x = zoo.sample_input("mnist_cnn")
    sent = split.head(x, 5)[0]
    body = {"inputs": [{"name": "pool2", "shape": list(sent.shape), "datatype": "FP32",
                        "data": sent.reshape(-1).tolist()}],
            "parameters": {"split_point": 5}}
    response = httpx.post(f"{cloud.url}/v2/models/mnist_cnn/infer", json=body)
    assert response.status_code == 200
    out = response.json()["outputs"][0]
    assert out["name"] == "output" and out["shape"] == [1, 10]
    assert np.allclose(out["data"], split(x).reshape(-1).tolist(), atol=1e-6)


def test_no_split_point_means_a_whole_inference(cloud: CloudProcess) -> None:
    x = zoo.sample_input("mnist_cnn")
    response = infer(cloud, "mnist_cnn", 0, [x])
    assert int(output_of(response).argmax()) == 2
    plain = httpx.post(f"{cloud.url}/v2/models/mnist_cnn/infer", json={"inputs": [
        {"name": "x", "shape": [1, 1, 28, 28], "datatype": "FP32",
         "data": x.reshape(-1).tolist()}]})
    assert plain.json()["parameters"]["split_point"] == 0


def test_a_standard_oip_client_can_call_it(cloud: CloudProcess) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=cloud.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_model_ready("mnist_cnn")
    metadata = client.get_model_metadata("mnist_cnn")
    x = zoo.sample_input("mnist_cnn").numpy()
    request = triton.InferInput(metadata["inputs"][0]["name"], list(x.shape), "FP32")
    request.set_data_from_numpy(x, binary_data=True)
    result = client.infer("mnist_cnn", [request],
                          outputs=[triton.InferRequestedOutput("output", binary_data=True)])
    assert int(result.as_numpy("output").argmax()) == 2
    client.close()


def test_the_thesis_offload_request(cloud: CloudProcess, split_model: SplitFactory) -> None:
    split = split_model("alexnet")
    x = zoo.sample_input("alexnet")
    tensor = split.head(x, 15)[0]
    body = {"tensor": base64.b64encode(tensor.numpy().astype("<f4").tobytes()).decode(),
            "splitting_point": 15, "model": "alexnet"}
    response = httpx.post(f"{cloud.url}/offload", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = split(x)
    assert answer["shape"] == [1, 1000]
    assert np.allclose(answer["output"], expected.reshape(-1).tolist(), atol=1e-5)
    assert answer["prediction"] == int(expected.argmax())
    assert len(answer["layer_times_s"]) == 4 and answer["cloud_s"] > 0


def test_the_thesis_request_with_a_residual_cut(cloud: CloudProcess,
                                                split_model: SplitFactory) -> None:
    split = split_model("resnet18")
    x = zoo.sample_input("resnet18")
    sp = next(p.split_point for p in split.split_points if len(p.tensors) == 2)
    raw = b"".join(t.numpy().astype("<f4").tobytes() for t in split.head(x, sp))
    response = httpx.post(f"{cloud.url}/offload", json={
        "tensor": base64.b64encode(raw).decode(), "splitting_point": sp, "model": "resnet18"})
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == int(split(x).argmax())


@pytest.mark.parametrize("codec", [c.name for c in all_codecs()])
def test_every_codec_through_the_server(cloud: CloudProcess, split_model: SplitFactory,
                                        codec: str) -> None:
    split = split_model("alexnet")
    x = zoo.sample_input("alexnet")
    out = output_of(infer(cloud, "alexnet", 6, list(split.head(x, 6)), codec=codec))
    if codec.startswith("raw"):
        assert torch.allclose(out, split(x), atol=1e-5)
    assert int(out.argmax()) == int(split(x).argmax())


@pytest.mark.parametrize(("model", "split_points"), [
    ("mnist_cnn", range(10)), ("alexnet", [0, 3, 9, 14, 19]),
    ("resnet18", [0, 5, 12, 33, 57, 68])])
def test_the_edge_client_round_trip_matches_local_inference(
        cloud: CloudProcess, split_model: SplitFactory, model: str,
        split_points: range | list[int]) -> None:
    split = split_model(model)
    x = zoo.sample_input(model)
    expected = split(x)
    with CloudClient(cloud.url) as client:
        for sp in split_points:
            sent = [encode_tensor(t, name=spec.name) for t, spec in
                    zip(split.head(x, sp), split.split_points[sp].tensors, strict=True)]
            reply = client.infer(model, sp, sent, deadline_s=30)
            assert torch.allclose(reply.output, expected, atol=1e-5), (model, sp)
            assert len(reply.layer_times_s) == split.n_layers - sp
            assert reply.request_bytes > split.split_points[sp].offload_bytes


def bad(cloud: CloudProcess, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{cloud.url}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]


MNIST_POOL2 = torch.zeros(1, 20, 4, 4)


@pytest.mark.parametrize(("send", "status", "message"), [
    (lambda c: infer(c, "lenet", 0, [MNIST_POOL2]), 404, "not served here"),
    (lambda c: infer(c, "mnist_cnn", 10, [MNIST_POOL2]), 400, "from 0 to 9"),
    (lambda c: infer(c, "mnist_cnn", -1, [MNIST_POOL2]), 400, "out of range"),
    (lambda c: bad(c, "/v2/models/mnist_cnn/infer", json={
        "inputs": [{"name": "x", "shape": [1, 20, 4, 4], "datatype": "FP32",
                    "data": [0.0] * 320}], "parameters": {"split_point": "5"}}),
     400, "out of range"),
    (lambda c: infer(c, "mnist_cnn", 5, [torch.zeros(1, 20, 4, 5)]), 400, "expected shape"),
    (lambda c: infer(c, "mnist_cnn", 5, [torch.zeros(1, 20, 4, 4, dtype=torch.int32)]), 400,
     "expected dtype float32"),
    (lambda c: infer(c, "mnist_cnn", 5, [MNIST_POOL2, MNIST_POOL2]), 400, "takes 1 input"),
    (lambda c: infer(c, "mnist_cnn", 5, [torch.full((1, 20, 4, 4), float("nan"))]), 400,
     "contains NaN"),
    (lambda c: infer(c, "mnist_cnn", 0, [torch.full((1, 1, 28, 28), float("inf"))]), 400,
     "the model's input input_1 contains infinity"),
    (lambda c: infer(c, "mnist_cnn", 5, [torch.zeros(100, 20, 4, 4)]), 400, "(max 16 rows)"),
    (lambda c: infer(c, "mnist_cnn", 5, [torch.zeros(17, 20, 4, 4)]), 400,
     "a batch of 17 rows, over this server's limit (max 16 rows)"),
    (lambda c: bad(c, "/v2/models/mnist_cnn/infer", content=b"\x00garbage\xff"), 400,
     "invalid inference request"),
    (lambda c: bad(c, "/v2/models/mnist_cnn/infer", content=b""), 400,
     "invalid inference request"),
    (lambda c: bad(c, "/v2/models/mnist_cnn/infer", content=b'{"inputs": []}',
                   headers={HEADER_LENGTH: "99"}), 400, "Inference-Header-Content-Length"),
    (lambda c: bad(c, "/offload", json={"tensor": "!!!", "splitting_point": 5,
                                        "model": "mnist_cnn"}), 400, "not valid base64"),
    (lambda c: bad(c, "/offload", json={"tensor": "AAAA", "splitting_point": 5,
                                        "model": "mnist_cnn"}), 400, "needs 1280 bytes, got 3"),
    (lambda c: bad(c, "/offload", json={"tensor": "AAAA", "splitting_point": 50,
                                        "model": "mnist_cnn"}), 400, "from 0 to 9"),
    (lambda c: bad(c, "/offload", json={"tensor": "AAAA", "splitting_point": 5,
                                        "model": "mnist_cnn", "dtype": "complex64"}), 400,
     "cannot travel"),
    (lambda c: bad(c, "/offload", json={"splitting_point": 5}), 400, "tensor"),
])
def test_bad_input_gets_a_4xx_with_a_message_and_changes_nothing(
        cloud: CloudProcess, split_model: SplitFactory, send: Callable[[CloudProcess],
                                                                         httpx.Response],
        status: int, message: str) -> None:
    response = send(cloud)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert "Traceback" not in response.text
    # The server is unharmed: the same valid request still gets the same answer.
    split = split_model("mnist_cnn")
    x = zoo.sample_input("mnist_cnn")
    assert torch.allclose(output_of(infer(cloud, "mnist_cnn", 5, list(split.head(x, 5)))),
                          split(x), atol=1e-6)


def test_metrics_count_requests_errors_and_tail_times(cloud: CloudProcess) -> None:
    infer(cloud, "mnist_cnn", 9, [torch.zeros(1, 10)])
    infer(cloud, "lenet", 0, [torch.zeros(1, 10)])
    text = httpx.get(f"{cloud.url}/metrics").text
    assert 'edgesplit_requests_total{route="/v2/models/{model}/infer",status="200"}' in text
    assert 'edgesplit_errors_total{kind="UnknownModel"' in text
    assert 'edgesplit_tail_seconds_count{model="mnist_cnn",split_point="9"}' in text


def test_the_probe_endpoint_swallows_bodies(cloud: CloudProcess) -> None:
    assert httpx.post(f"{cloud.url}/edgesplit/probe", content=bytes(5000)).json() == {
        "received": 5000}


def test_bodies_over_the_limit_get_413() -> None:
    with CloudProcess("--max-body-mb", "0.01", models="mnist_cnn") as small:
        response = httpx.post(f"{small.url}/edgesplit/probe", content=bytes(20_000))
        assert response.status_code == 413
        assert "byte limit" in response.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming too
            for _ in range(10):
                yield bytes(5000)

        streamed = httpx.post(f"{small.url}/edgesplit/probe", content=chunks())
        assert streamed.status_code == 413
        assert httpx.post(f"{small.url}/edgesplit/probe", content=bytes(100)).status_code == 200


def test_a_token_is_required_when_set() -> None:
    with CloudProcess("--token", "s3cret", models="mnist_cnn") as guarded:
        url = f"{guarded.url}/v2/models/mnist_cnn"
        assert httpx.get(url).status_code == 401
        wrong = httpx.get(url, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "bearer token" in wrong.json()["error"]
        assert httpx.get(url, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{guarded.url}/v2/health/live").status_code == 200


def test_a_client_leaving_mid_body_is_routine_not_an_error(cloud: CloudProcess) -> None:
    import socket

    def short_bodies() -> float:
        """Infer requests whose body ended short of its length, as the server counts them."""
        text = httpx.get(f"{cloud.url}/metrics").text
        assert 'kind="internal"' not in text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("edgesplit_errors_total")
                   and 'route="/v2/models/{model}/infer"' in line
                   and 'kind="WireFormatError"' in line)

    before = short_bodies()
    with socket.create_connection(("127.0.0.1", cloud.port)) as sock:
        sock.sendall(b"POST /v2/models/mnist_cnn/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b"x" * 1000)
    if "ray" in cloud.args:  # Ray's proxy takes the whole body before a replica sees it
        assert httpx.get(f"{cloud.url}/v2/health/ready").json() == {"ready": True}
        assert short_bodies() == before
        return
    # The server sees the close as the end of a body short of its length (a client that only
    # half-closed gets that 400 as its answer); either way it is counted, not an error.
    wait_until(lambda: short_bodies() > before, "the short body counted")
    assert short_bodies() == before + 1
