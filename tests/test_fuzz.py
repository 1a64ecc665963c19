"""Bad input, generated: every decoder gives a tensor or a clean WireFormatError, and the live
server answers thousands of schema-derived and hand-made malformed requests without one 5xx."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesplit.cloud import CloudService
from edgesplit.cloud.decoding import OffloadRequest, offload_tensors
from edgesplit.errors import WireFormatError
from edgesplit.testbed.processes import CloudProcess
from edgesplit.wire.codecs import (
    DATATYPES,
    decode_tensor,
    decompress,
    encode_tensor,
    parse_codec,
)
from edgesplit.wire.protocol import (
    HEADER_LENGTH,
    input_tensor,
    parse_request,
    parse_response,
)

MAX_ELEMENTS = 4096
FUZZ = settings(max_examples=300, deadline=1000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

shapes = st.lists(st.integers(-3, 70), max_size=5)
datatypes = st.sampled_from([*DATATYPES, "FP99", "", "BYTES"])
parameters = st.fixed_dictionaries({}, optional={
    "compression": st.sampled_from(["lz4", "zstd", "gzip", None, 7]),
    "quant_scale": st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=3)),
    "quant_zero_point": st.one_of(st.integers(-300, 300), st.floats(), st.none()),
})


def check_tensor(result: torch.Tensor, shape: list[int]) -> None:
    assert isinstance(result, torch.Tensor)
    assert list(result.shape) == shape
    assert result.numel() <= MAX_ELEMENTS


@FUZZ
@given(payload=st.binary(max_size=2048), shape=shapes, datatype=datatypes, params=parameters)
def test_decode_tensor_never_crashes(payload: bytes, shape: list[int], datatype: str,
                                     params: dict[str, Any]) -> None:
    try:
        result = decode_tensor(payload, shape, datatype, params, max_elements=MAX_ELEMENTS)
    except WireFormatError:
        return
    check_tensor(result, shape)


@FUZZ
@given(payload=st.binary(max_size=2048), compression=st.sampled_from(["lz4", "zstd"]),
       expected=st.integers(0, 1 << 20))
def test_decompression_never_returns_more_than_it_should(payload: bytes, compression: str,
                                                          expected: int) -> None:
    try:
        out = decompress(payload, compression, expected)
    except WireFormatError:
        return
    assert len(out) <= expected + 1


@FUZZ
@given(tensor=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=64),
       codec=st.sampled_from(["raw", "raw+lz4", "raw+zstd", "float16", "float16+zstd", "int8",
                              "int8+lz4", "int8+zstd"]), cut=st.integers(0, 40))
def test_truncated_encodings_never_decode_to_garbage_silently(tensor: list[float], codec: str,
                                                              cut: int) -> None:
    enc = encode_tensor(torch.tensor([tensor]), parse_codec(codec))
    payload = enc.payload[:max(0, len(enc.payload) - cut)]
    try:
        result = decode_tensor(payload, enc.shape, enc.datatype, enc.parameters)
    except WireFormatError:
        return
    assert cut == 0 or codec.endswith("zstd")  # zstd's frame may end in padding
    check_tensor(result, list(enc.shape))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)
request_like = st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries({
    "name": st.text(max_size=5), "shape": st.lists(st.integers(-2, 40), max_size=4),
    "datatype": datatypes,
}, optional={"data": json_values, "parameters": st.fixed_dictionaries({}, optional={
    "binary_data_size": st.integers(-5, 5000) | st.text(max_size=3),
    "compression": st.sampled_from(["lz4", "zstd", "x"])})}), max_size=3)},
    optional={"parameters": json_values, "id": json_values})


@FUZZ
@given(header=request_like, tail=st.binary(max_size=512),
       length=st.one_of(st.none(), st.just("auto"), st.text(max_size=6)))
def test_parse_request_and_inputs_never_crash(header: dict[str, Any], tail: bytes,
                                              length: str | None) -> None:
    head = json.dumps(header).encode()
    header_length = str(len(head)) if length == "auto" else length
    try:
        request, payloads = parse_request(head + tail, header_length)
        for item, payload in zip(request.inputs, payloads, strict=True):
            check_tensor(input_tensor(item, payload, MAX_ELEMENTS), item.shape)
    except WireFormatError:
        return


@FUZZ
@given(body=st.binary(max_size=1024), length=st.one_of(st.none(), st.text(max_size=6)))
def test_arbitrary_bytes_as_a_request_or_a_response(body: bytes, length: str | None) -> None:
    for parse in (parse_request, parse_response):
        try:
            parse(body, length)
        except WireFormatError:
            continue


@pytest.fixture(scope="module")
def mnist_service() -> CloudService:
    return CloudService.from_zoo(["mnist_cnn"])


@FUZZ
@given(tensor=st.one_of(st.text(max_size=64), st.binary(max_size=6000).map(
           lambda b: base64.b64encode(b).decode())),
       split_point=st.integers(0, 9),
       shape=st.one_of(st.none(), st.lists(st.integers(-1, 30), max_size=5)),
       dtype=st.sampled_from(["float32", "float16", "int8", "device", "complex64", "nope"]))
def test_the_thesis_request_decodes_or_refuses(mnist_service: CloudService, tensor: str,
                                                split_point: int, shape: list[int] | None,
                                                dtype: str) -> None:
    request = OffloadRequest(tensor=tensor, splitting_point=split_point, model="mnist_cnn",
                             shape=shape, dtype=dtype)
    try:
        tensors = offload_tensors(mnist_service, request)
        mnist_service.run("mnist_cnn", split_point, tensors)
    except WireFormatError:
        return


def binary_request(header: dict[str, Any], tail: bytes,
                   length: int | None = None) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + tail, {HEADER_LENGTH: str(len(head) if length is None else length)}


def pool2(size: int, **parameters: object) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, 20, 4, 4], "datatype": "FP32",
                        "parameters": {"binary_data_size": size, **parameters}}],
            "parameters": {"split_point": 5}}


GOOD = bytes(1280)
BINARY_CASES = {
    "header length longer than the body": binary_request(pool2(1280), GOOD, length=10**6),
    "header length cutting the JSON": binary_request(pool2(1280), GOOD, length=20),
    "header length zero": binary_request(pool2(1280), GOOD, length=0),
    "header length negative": binary_request(pool2(1280), GOOD, length=-5),
    "size larger than the data": binary_request(pool2(5000), GOOD),
    "size smaller than the data": binary_request(pool2(100), GOOD),
    "size not a number": binary_request(pool2("1280"), GOOD),  # type: ignore[arg-type]
    "truncated body": binary_request(pool2(1280), GOOD[:700]),
    "wrong datatype": binary_request({**pool2(1280), "inputs": [
        {**pool2(1280)["inputs"][0], "datatype": "INT32"}]}, GOOD),
    "wrong shape": binary_request({**pool2(1280), "inputs": [
        {**pool2(1280)["inputs"][0], "shape": [1, 20, 8, 2]}]}, GOOD),
    "NaN": binary_request(pool2(1280), torch.full((320,), float("nan")).numpy().tobytes()),
    "infinity": binary_request(pool2(1280), torch.full((320,), float("inf")).numpy().tobytes()),
    "empty body": (b"", {HEADER_LENGTH: "0"}),
    "compressed garbage": binary_request(pool2(1280, compression="zstd"), GOOD),
    "quantisation on floats": binary_request(pool2(1280, quant_scale=1, quant_zero_point=0),
                                             GOOD),
}


@pytest.mark.parametrize("case", BINARY_CASES)
def test_hand_made_binary_requests_get_a_4xx(cloud: CloudProcess, case: str) -> None:
    body, headers = BINARY_CASES[case]
    response = httpx.post(f"{cloud.url}/v2/models/mnist_cnn/infer", content=body,
                          headers=headers)
    assert 400 <= response.status_code < 500, (case, response.text)
    assert response.json()["error"]
    assert httpx.get(f"{cloud.url}/v2/health/live").json() == {"live": True}


def test_schemathesis_finds_no_server_error(cloud: CloudProcess) -> None:
    """Schema-derived requests to every operation (coverage and fuzzing phases): no 5xx."""
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{cloud.url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "60",
         "--phases", "coverage,fuzzing", "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=600)
    tried = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert result.returncode == 0, result.stdout[-3000:]
    assert tried and tried.group(1) == tried.group(2) and int(tried.group(1)) > 300
    print(f"schemathesis: {tried.group(0)}")
    assert httpx.get(f"{cloud.url}/v2/health/ready").json() == {"ready": True}
