"""The Open Inference Protocol v2 (KServe/Triton REST) with its binary tensor data extension.

Pure functions that turn requests and responses into bytes and back; both the cloud server and
the edge's client use them, so the two cannot drift apart. A request is a JSON header, optionally
followed by the binary data of its tensors, in input order; ``Inference-Header-Content-Length``
gives the header's length. Every malformed body raises ``WireFormatError`` with what was wrong.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import torch
from pydantic import BaseModel, Field, ValidationError

from edgesplit.errors import WireFormatError, first_validation_error
from edgesplit.wire.codecs import DATATYPES, EncodedTensor, decode_tensor, element_count

HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE = "binary_data_size"
JSON_CONTENT = "application/json"
BINARY_CONTENT = "application/octet-stream"


class RequestInput(BaseModel):
    """One input tensor: ``data`` in the JSON, or ``binary_data_size`` bytes after it."""

    name: str = Field(min_length=1, max_length=256)
    shape: list[int] = Field(max_length=16)
    datatype: str
    parameters: dict[str, Any] = {}
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    parameters: dict[str, Any] = {}


class InferenceRequest(BaseModel):
    """The JSON part of ``POST /v2/models/{model}/infer``."""

    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] = {}
    inputs: list[RequestInput] = Field(min_length=1, max_length=64)
    outputs: list[RequestOutput] = []


@dataclass(frozen=True)
class JsonData:
    """An input's ``data`` as the raw JSON text it came in, parsed only when it is decoded."""

    raw: bytes


Payload = bytes | JsonData | None  # binary data, JSON data, or (None) ``RequestInput.data``


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest,
                                                                   list[Payload]]:
    """Split a request body into its header and each input's payload: its binary data, or its
    JSON ``data`` kept as text (``JsonData``), so no Python object is made per element."""
    header_bytes, rest = _split_header(body, header_length)
    fields, json_data = _without_data(header_bytes)
    try:
        request = InferenceRequest.model_validate(fields)
    except ValidationError as exc:
        raise WireFormatError(
            f"invalid inference request: {first_validation_error(exc)}") from exc
    payloads: list[Payload] = []
    offset = 0
    for item, data in zip(request.inputs, json_data, strict=True):
        size = item.parameters.get(BINARY_SIZE)
        if size is None:
            if data is None:
                raise WireFormatError(
                    f"input {item.name!r} has neither data nor a {BINARY_SIZE} parameter")
            payloads.append(JsonData(data))
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise WireFormatError(f"input {item.name!r}: {BINARY_SIZE} must be a non-negative "
                                  f"integer, got {size!r}")
        if offset + size > len(rest):
            raise WireFormatError(
                f"input {item.name!r} claims {size} bytes of binary data but the body holds "
                f"{len(rest) - offset} more"
            )
        payloads.append(rest[offset:offset + size])
        offset += size
    if offset != len(rest):
        raise WireFormatError(
            f"the body has {len(rest) - offset} bytes after the last input's binary data"
        )
    return request, payloads


def _without_data(header: bytes) -> tuple[Any, list[bytes | None]]:
    """The request's JSON with every input's ``data`` taken out as raw text (msgspec checks the
    JSON syntax but builds nothing for what it keeps raw)."""
    try:
        top = msgspec.json.decode(header, type=dict[str, msgspec.Raw])
        inputs = msgspec.json.decode(top.get("inputs", b"[]"),
                                     type=list[dict[str, msgspec.Raw]])
        data = [bytes(item.pop("data", b"null")) for item in inputs]
        fields = {key: msgspec.json.decode(value) for key, value in top.items()}
        fields["inputs"] = [{key: msgspec.json.decode(value) for key, value in item.items()}
                            for item in inputs]
    except (msgspec.DecodeError, RecursionError) as exc:  # DecodeError: ValidationError too
        raise WireFormatError(f"invalid inference request: {exc}") from exc
    if "inputs" not in top:
        del fields["inputs"]  # pydantic says it is missing
    return fields, [None if raw == b"null" else raw for raw in data]


def input_tensor(item: RequestInput, payload: Payload, max_elements: int) -> torch.Tensor:
    """Decode one request input, binary or JSON, refusing more than ``max_elements``."""
    if isinstance(payload, bytes):
        return decode_tensor(payload, item.shape, item.datatype, item.parameters,
                             max_elements=max_elements)
    count = element_count(item.shape, max_elements)
    if item.datatype not in DATATYPES:
        raise WireFormatError(
            f"unknown datatype {item.datatype!r}: expected one of {', '.join(DATATYPES)}")
    wire_dtype, dtype = DATATYPES[item.datatype]
    if dtype == torch.bfloat16:  # JSON writes numbers: read them as float32, then round
        wire_dtype = "<f4"
    try:
        array = _json_array(item, payload, wire_dtype)
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.DecodeError) as exc:
        raise WireFormatError(
            f"input {item.name!r}: data is not a list of {item.datatype} numbers") from exc
    if array.size != count:
        raise WireFormatError(
            f"input {item.name!r}: shape {item.shape} needs {count} values, got {array.size}")
    # A fresh array (never a view of the body): native byte order without another copy.
    native = array.astype(array.dtype.newbyteorder("="), copy=False)
    return torch.from_numpy(native.reshape(item.shape)).to(dtype)


_NUMBERS = re.compile(rb"[\[\]0-9eE+\-., \t\r\n]*")


def _json_array(item: RequestInput, payload: JsonData | None,
                wire_dtype: str) -> np.ndarray[Any, Any]:
    """The values of a JSON input, flat. Floats, flat or nested as the shape, are parsed by numpy
    straight from the text (a few bytes of memory per byte of JSON); anything else through
    Python objects (held small by the server's JSON size limit)."""
    if payload is None:
        return np.asarray(item.data, dtype=wire_dtype).reshape(-1)
    raw = payload.raw
    if (wire_dtype.endswith(("f2", "f4", "f8")) and _NUMBERS.fullmatch(raw)
            and raw.count(b"[") in (1, _nested_lists(item.shape))):
        text = raw.translate(None, b"[]")
        if not text.strip(b" \t\r\n"):
            return np.empty(0, dtype=wire_dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns, then stops, at text it cannot read
            return np.fromstring(text, dtype=wire_dtype, sep=",")
    return np.asarray(msgspec.json.decode(raw), dtype=wire_dtype).reshape(-1)


def _nested_lists(shape: list[int]) -> int:
    """How many ``[`` a list nested as ``shape`` has: 1 + d0 + d0*d1 + ... (inner levels)."""
    return sum(math.prod(shape[:level]) for level in range(len(shape)))


def encode_request(tensors: Sequence[EncodedTensor], parameters: Mapping[str, Any], *,
                   request_id: str | None = None,
                   binary_output: bool = True) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request body and its headers."""
    header: dict[str, Any] = {
        "inputs": [{"name": t.name, "shape": list(t.shape), "datatype": t.datatype,
                    "parameters": t.parameters | {BINARY_SIZE: len(t.payload)}}
                   for t in tensors],
        "parameters": dict(parameters) | {"binary_data_output": binary_output},
    }
    if request_id is not None:
        header["id"] = request_id
    return _binary_body(header, [t.payload for t in tensors])


def encode_response(model: str, outputs: Sequence[EncodedTensor], parameters: Mapping[str, Any],
                    *, binary: bool, request_id: str | None = None,
                    version: str = "1") -> tuple[bytes, dict[str, str]]:
    """A response: outputs as JSON ``data`` lists, or as binary data after the JSON header."""
    header: dict[str, Any] = {"model_name": model, "model_version": version,
                              "parameters": dict(parameters)}
    if request_id is not None:
        header["id"] = request_id
    if not binary:
        header["outputs"] = [{"name": t.name, "shape": list(t.shape), "datatype": t.datatype,
                              "data": _json_values(t)} for t in outputs]
        return json.dumps(header).encode(), {"content-type": JSON_CONTENT}
    header["outputs"] = [{"name": t.name, "shape": list(t.shape), "datatype": t.datatype,
                          "parameters": t.parameters | {BINARY_SIZE: len(t.payload)}}
                         for t in outputs]
    return _binary_body(header, [t.payload for t in outputs])


def parse_response(body: bytes, header_length: str | None, *,
                   max_elements: int = 1 << 28) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """The response's JSON header and its output tensors (binary or JSON), refusing any
    output of more than ``max_elements`` before decoding it."""
    header_bytes, rest = _split_header(body, header_length)
    try:
        header = json.loads(header_bytes)
        outputs = header["outputs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise WireFormatError("the response is not an inference response") from exc
    tensors = []
    offset = 0
    for item in outputs:
        parameters = item.get("parameters") or {}
        size = parameters.get(BINARY_SIZE)
        if size is None:
            tensors.append(input_tensor(RequestInput.model_validate(item), None, max_elements))
            continue
        tensors.append(decode_tensor(rest[offset:offset + size], item["shape"],
                                     item["datatype"], parameters, max_elements=max_elements))
        offset += size
    return header, tensors


def _split_header(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise WireFormatError(
            f"Inference-Header-Content-Length must be an integer, got {header_length[:40]!r}"
        ) from None
    if not 0 < length <= len(body):
        raise WireFormatError(
            f"Inference-Header-Content-Length is {length} but the body has {len(body)} bytes"
        )
    return body[:length], body[length:]


def _binary_body(header: dict[str, Any], payloads: Sequence[bytes]) -> tuple[bytes,
                                                                             dict[str, str]]:
    header_bytes = json.dumps(header).encode()
    body = b"".join([header_bytes, *payloads])
    return body, {"content-type": BINARY_CONTENT, HEADER_LENGTH: str(len(header_bytes))}


def _json_values(t: EncodedTensor) -> list[Any]:
    values = decode_tensor(t.payload, t.shape, t.datatype, t.parameters).reshape(-1).tolist()
    return [v if not isinstance(v, float) or math.isfinite(v) else None for v in values]

