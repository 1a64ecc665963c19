from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgesplit.errors import WireFormatError
from edgesplit.wire.codecs import (
    COMPRESSIONS,
    Codec,
    Compression,
    all_codecs,
    decode_tensor,
    encode_tensor,
    parse_codec,
)
from edgesplit.wire.protocol import (
    HEADER_LENGTH,
    JsonData,
    encode_request,
    encode_response,
    input_tensor,
    parse_request,
    parse_response,
)

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)


def activation() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.relu(torch.randn(1, 32, 12, 12))  # sparse and non-negative, like a ReLU output


@pytest.mark.parametrize("codec", [c.name for c in all_codecs()])
def test_every_codec_round_trips(codec: str) -> None:
    t = activation()
    enc = encode_tensor(t, parse_codec(codec), "x")
    back = decode_tensor(enc.payload, enc.shape, enc.datatype, enc.parameters)
    assert back.shape == t.shape
    if parse_codec(codec).lossy:
        tolerance = 1e-3 * float(t.max()) if codec.startswith("float16") else float(t.max()) / 255
        assert torch.allclose(back.float(), t, atol=tolerance)
    else:
        assert torch.equal(back, t)


def test_codecs_shrink_what_they_should() -> None:
    t = activation()
    size = {c.name: len(encode_tensor(t, c).payload) for c in all_codecs()}
    assert size["raw"] == t.numel() * 4
    assert size["float16"] == t.numel() * 2
    assert size["int8"] == t.numel()
    assert size["raw+zstd"] < size["raw"] and size["int8+lz4"] < size["int8"]


def test_int8_carries_its_scale_and_zero_point() -> None:
    t = torch.tensor([[-1.0, 0.0, 0.5, 3.0]])
    enc = encode_tensor(t, Codec("int8"))
    assert enc.datatype == "INT8"
    assert enc.parameters["quant_scale"] == pytest.approx(4 / 255)
    back = decode_tensor(enc.payload, enc.shape, enc.datatype, enc.parameters)
    assert torch.allclose(back, t, atol=4 / 255)


def test_integer_tensors_pass_through_lossy_codecs_unchanged() -> None:
    t = torch.arange(10, dtype=torch.int64).reshape(1, 10)
    enc = encode_tensor(t, parse_codec("int8+zstd"))
    assert enc.datatype == "INT64"
    assert torch.equal(decode_tensor(enc.payload, enc.shape, enc.datatype, enc.parameters), t)


@pytest.mark.parametrize(("payload", "shape", "datatype", "parameters", "message"), [
    (b"\x00" * 12, [1, 4], "FP32", {}, "needs 16 bytes, got 12"),
    (b"\x00" * 16, [1, 4], "FP99", {}, "unknown datatype"),
    (b"\x00" * 16, [1, -4], "FP32", {}, "negative dimension"),
    (b"\x00" * 16, [1 << 20, 1 << 20], "FP32", {}, "more than the"),
    (b"garbage", [1, 4], "FP32", {"compression": "zstd"}, "zstd data is corrupt"),
    (b"garbage", [1, 4], "FP32", {"compression": "lz4"}, "lz4 data is corrupt|needs 16 bytes"),
    (b"\x00" * 16, [1, 4], "FP32", {"compression": "brotli"}, "unknown compression"),
    (b"\x00" * 4, [1, 4], "INT8", {"quant_scale": -1, "quant_zero_point": 0}, "quant_scale"),
    (b"\x00" * 4, [1, 4], "INT8", {"quant_scale": 10**400, "quant_zero_point": 0},
     "quant_scale"),
    (b"\x00" * 4, [1, 4], "INT8", {"quant_scale": 1.0, "quant_zero_point": 900}, "zero_point"),
    (b"\x00" * 16, [1, 4], "FP32", {"quant_scale": 1.0, "quant_zero_point": 0}, "only with INT8"),
    (b"\x00" * 16, "1,4", "FP32", {}, "list of integers"),
])
def test_bad_bytes_are_one_clear_error(payload: bytes, shape: object, datatype: str,
                                       parameters: dict[str, object], message: str) -> None:
    with pytest.raises(WireFormatError, match=message):
        decode_tensor(payload, shape, datatype, parameters)  # type: ignore[arg-type]


def test_a_zstd_frame_that_claims_a_huge_size_is_refused_before_allocating() -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(bytes(1 << 20))  # 1 MiB of zeros, tiny frame
    with pytest.raises(WireFormatError, match="declares 1048576 bytes"):
        decode_tensor(bomb, [1, 4], "FP32", {"compression": "zstd"})


def test_unknown_codecs_name_the_valid_forms() -> None:
    with pytest.raises(WireFormatError, match=r"e\.g\. 'float16\+zstd'"):
        parse_codec("bfloat16")
    with pytest.raises(WireFormatError):
        parse_codec("raw+gzip")


def test_request_round_trip_through_the_binary_extension() -> None:
    tensors = [encode_tensor(activation(), parse_codec("float16+lz4"), "a"),
               encode_tensor(torch.ones(1, 3), name="b")]
    body, headers = encode_request(tensors, {"split_point": 4}, request_id="7")
    request, payloads = parse_request(body, headers[HEADER_LENGTH])
    assert request.id == "7" and request.parameters["split_point"] == 4
    assert [i.name for i in request.inputs] == ["a", "b"]
    a = input_tensor(request.inputs[0], payloads[0], 1 << 20)
    assert torch.allclose(a.float(), activation(), atol=1e-2)
    assert torch.equal(input_tensor(request.inputs[1], payloads[1], 10), torch.ones(1, 3))


def test_json_inputs_are_decoded_and_checked() -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                                   "data": [[1, 2], [3, 4]]}]}).encode()
    request, payloads = parse_request(body, None)
    assert payloads == [JsonData(b"[[1, 2], [3, 4]]")]  # kept as text until decoded
    assert input_tensor(request.inputs[0], payloads[0], 4).tolist() == [[1, 2], [3, 4]]
    with pytest.raises(WireFormatError, match="more than the 3 allowed"):
        input_tensor(request.inputs[0], payloads[0], 3)
    bad = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
                                  "data": ["a", "b"]}]}).encode()
    request, payloads = parse_request(bad, None)
    with pytest.raises(WireFormatError, match="not a list of FP32 numbers"):
        input_tensor(request.inputs[0], payloads[0], 4)


@pytest.mark.parametrize(("data", "shape", "datatype", "expected"), [
    ("[1, 2.5e3, -3E-1, 0]", [2, 2], "FP32", [1, 2500, -0.3, 0]),  # flat: numpy parses it
    ("[[1, 2], [3, 4]]", [2, 2], "FP16", [1, 2, 3, 4]),  # nested as the shape
    ("[[[1], [2]]]", [1, 2, 1], "FP64", [1, 2]),
    ("[]", [0, 3], "FP32", []),
    ("[1, 2, 3, 4]", [2, 2], "INT32", [1, 2, 3, 4]),  # integers keep exact values
    ("[true, false]", [2], "BOOL", [True, False]),
])
def test_json_data_of_every_form_decodes(data: str, shape: list[int], datatype: str,
                                         expected: list[float]) -> None:
    body = f'{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "{datatype}", ' \
           f'"data": {data}}}]}}'.encode()
    request, payloads = parse_request(body, None)
    tensor = input_tensor(request.inputs[0], payloads[0], 64)
    assert list(tensor.shape) == shape
    assert np.allclose(tensor.reshape(-1).double().numpy(), expected, rtol=1e-3)


@pytest.mark.parametrize("data", ["[1, 2, 3]", "[[1, 2], [3]]", "[[1, 2], 3, 4]", "5",
                                  '[1, "a", 3, 4]', "[1, 2, 3, {}]"])
def test_json_data_that_does_not_fit_its_shape_is_refused(data: str) -> None:
    body = f'{{"inputs": [{{"name": "x", "shape": [2, 2], "datatype": "FP32", ' \
           f'"data": {data}}}]}}'.encode()
    request, payloads = parse_request(body, None)
    with pytest.raises(WireFormatError):
        input_tensor(request.inputs[0], payloads[0], 64)


@pytest.mark.parametrize("body", [b"[]", b'{"inputs": {}}', b'{"inputs": [{"data": [1,,2]}]}',
                                  b'{"inputs": [{"name": "x"}]}', b'{"inputs": [7]}', b"{",
                                  b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}'])
def test_malformed_json_requests_are_refused(body: bytes) -> None:
    with pytest.raises(WireFormatError):
        parse_request(body, None)


@pytest.mark.parametrize("field", ["data", "parameters", "id"])
def test_deeply_nested_json_is_refused_not_a_crash(field: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    body = (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "' + field.encode()
            + b'": ' + deep + b"}]}")
    with pytest.raises(WireFormatError):
        request, payloads = parse_request(body, None)
        input_tensor(request.inputs[0], payloads[0], 4)


def binary_input(size: object) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                   "parameters": {"binary_data_size": size}}]}).encode()


@pytest.mark.parametrize(("header", "tail", "header_length", "message"), [
    (b"not json", b"", None, "invalid inference request"),
    (b'{"inputs": []}', b"", None, "inputs"),
    (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', b"", None,
     "neither data nor"),
    (binary_input(8), b"abcd", "auto", "claims 8 bytes"),
    (binary_input(4), b"abcdEXTRA", "auto", "after the last input"),
    (binary_input(-4), b"", "auto", "non-negative"),
    (binary_input("4"), b"abcd", "auto", "non-negative integer"),
    (b'{"inputs": []}', b"", "500", "body has 14 bytes"),
    (b'{"inputs": []}', b"", "0", "body has 14 bytes"),
    (b'{"inputs": []}', b"", "ten", "must be an integer"),
])
def test_malformed_requests_are_one_clear_error(header: bytes, tail: bytes,
                                                header_length: str | None, message: str) -> None:
    length = str(len(header)) if header_length == "auto" else header_length
    with pytest.raises(WireFormatError, match=message):
        parse_request(header + tail, length)


@pytest.mark.parametrize("binary", [True, False])
def test_response_round_trip(binary: bool) -> None:
    out = torch.softmax(torch.randn(1, 10), 1)
    body, headers = encode_response("m", [encode_tensor(out, name="output")],
                                    {"cloud_s": 0.5}, binary=binary, request_id="1")
    header, tensors = parse_response(body, headers.get(HEADER_LENGTH))
    assert header["parameters"]["cloud_s"] == 0.5 and header["id"] == "1"
    assert torch.allclose(tensors[0], out)


def test_a_codec_added_to_the_registry_works_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """One entry in the registry: parsed, listed, encoded, decoded and given a size prior."""
    from edgesplit.core.predictors import codec_ratio_prior

    monkeypatch.setitem(COMPRESSIONS, "rev", Compression(
        0.9, lambda data: data[::-1], lambda data, expected: data[::-1][:expected + 1]))
    codec = parse_codec("float16+rev")
    assert codec in all_codecs() and codec.lossy
    enc = encode_tensor(activation(), codec, "x")
    assert enc.parameters["compression"] == "rev"
    back = decode_tensor(enc.payload, enc.shape, enc.datatype, enc.parameters)
    assert torch.allclose(back.float(), activation(), atol=1e-2)
    assert codec_ratio_prior("float16+rev") == pytest.approx(0.5 * 0.9)
    assert codec_ratio_prior("int8+zstd") == pytest.approx(0.25 * 0.65)


# -- issue 19 items 18 and 19: infinities and bfloat16 travel -----------------------------------

def masked_scores(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Attention scores with a causal -inf mask, a +inf and a NaN, as a cut may carry them."""
    torch.manual_seed(1)
    scores = torch.randn(2, 6, 6).masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1),
                                              float("-inf"))
    scores[0, 0, 0] = float("inf")
    scores[1, 2, 0] = float("nan")
    return scores.to(dtype)


@pytest.mark.parametrize("codec", [c.name for c in all_codecs()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_every_codec_carries_infinities_and_nan_exactly(codec: str, dtype: torch.dtype) -> None:
    t = masked_scores(dtype)
    enc = encode_tensor(t, parse_codec(codec), "scores")
    back = decode_tensor(enc.payload, enc.shape, enc.datatype, enc.parameters).to(dtype)
    finite = torch.isfinite(t)
    assert torch.equal(torch.isnan(back), torch.isnan(t))
    assert torch.equal(back[torch.isinf(t)], t[torch.isinf(t)])  # -inf and +inf, in place
    assert bool(torch.isfinite(back[finite]).all())
    tolerance = {"raw": 0.0, "float16": 4e-3, "int8": 1.1 * float(
        t[finite].float().abs().max()) * 2 / 252}[codec.partition("+")[0]]
    assert torch.allclose(back[finite].double(), t[finite].double(),
                          atol=tolerance + (2e-2 if dtype == torch.bfloat16 else 0.0))


def test_int8_without_infinities_keeps_its_format() -> None:
    enc = encode_tensor(torch.tensor([[-1.0, 3.0]]), Codec("int8"))
    assert "quant_nonfinite" not in enc.parameters
    assert encode_tensor(masked_scores(), Codec("int8")).parameters["quant_nonfinite"] is True
    with pytest.raises(WireFormatError, match="quant_nonfinite must be true or false"):
        decode_tensor(enc.payload, enc.shape, enc.datatype,
                      enc.parameters | {"quant_nonfinite": "yes"})


def test_bfloat16_travels_as_bf16_bit_for_bit() -> None:
    t = torch.randn(3, 5).to(torch.bfloat16)
    for codec in ("raw", "raw+zstd", "raw+lz4"):
        enc = encode_tensor(t, parse_codec(codec), "h")
        assert enc.datatype == "BF16"
        assert codec != "raw" or len(enc.payload) == t.numel() * 2  # 2 bytes a value
        back = decode_tensor(enc.payload, enc.shape, enc.datatype, enc.parameters)
        assert back.dtype == torch.bfloat16 and torch.equal(back, t)
    body, headers = encode_request([encode_tensor(t, name="h")], {"split_point": 1})
    request, payloads = parse_request(body, headers[HEADER_LENGTH])
    assert torch.equal(input_tensor(request.inputs[0], payloads[0], 100), t)
    # As JSON numbers too (read as float32, rounded to bfloat16).
    item = request.inputs[0].model_copy(update={"parameters": {}})
    data = JsonData(json.dumps(t.float().tolist()).encode())
    assert torch.equal(input_tensor(item, data, 100), t)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.quint8])
def test_what_no_oip_datatype_carries_is_refused_in_one_line(dtype: torch.dtype) -> None:
    t = (torch.randn(2, 2, dtype=torch.complex64) if dtype == torch.complex64
         else torch.quantize_per_tensor(torch.rand(2, 2), 0.1, 0, torch.quint8))
    with pytest.raises(WireFormatError, match="no datatype for them"):
        encode_tensor(t)
