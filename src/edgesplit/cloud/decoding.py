"""Request bodies to the tensors of a cut: the OIP v2 inputs and the thesis's /offload body.

Pure: bytes and the served models in, tensors (or ``WireFormatError``) out.
"""

from __future__ import annotations

import base64
import binascii
import math

import torch
from pydantic import BaseModel, Field, ValidationError

from edgesplit.cloud.service import CloudService
from edgesplit.core.splitting import TensorSpec, torch_dtype
from edgesplit.errors import WireFormatError, first_validation_error
from edgesplit.wire.codecs import TORCH_TO_DATATYPE, decode_tensor
from edgesplit.wire.protocol import InferenceRequest, Payload, input_tensor, parse_request


class OffloadRequest(BaseModel):
    """The thesis's request (Listing 1), with an optional explicit shape and dtype."""

    tensor: str
    splitting_point: int
    model: str
    shape: list[int] | None = Field(default=None, max_length=16)
    dtype: str = "float32"
    model_digest: str | None = Field(default=None, max_length=80)  # 409 unless the served one


def datatype_of(dtype: str) -> str:
    """The OIP datatype of a torch dtype name."""
    datatype = TORCH_TO_DATATYPE.get(torch_dtype(dtype))
    if datatype is None:
        raise WireFormatError(f"dtype {dtype!r} cannot travel on the wire")
    return datatype


def decode_infer(service: CloudService, model: str, body: bytes,
                 header_length: str | None) -> tuple[InferenceRequest, int, list[torch.Tensor]]:
    """An OIP request body: the parsed request, its split point and the cut's tensors."""
    parsed, payloads = parse_request(body, header_length)
    service.check_digest(model, parsed.parameters.get("model_digest"))
    split_point = service.split(model).check_split_point(parsed.parameters.get("split_point", 0))
    return parsed, split_point, match_inputs(service, model, split_point, parsed, payloads)


def match_inputs(service: CloudService, model: str, split_point: int,
                 request: InferenceRequest, payloads: list[Payload]) -> list[torch.Tensor]:
    """Order the request's inputs as the cut's tensors (by name; any name for a single one)."""
    specs = service.split(model).split_points[split_point].tensors
    if len(request.inputs) != len(specs):
        raise WireFormatError(
            f"split point {split_point} of {model} takes {len(specs)} input(s) "
            f"({', '.join(s.name for s in specs)}), got {len(request.inputs)}"
        )
    by_name = {item.name: (item, payload) for item, payload in
               zip(request.inputs, payloads, strict=True)}
    if len(specs) == 1:
        pairs = [(request.inputs[0], payloads[0])]
    else:
        missing = [s.name for s in specs if s.name not in by_name]
        if missing:
            raise WireFormatError(
                f"split point {split_point} of {model} needs inputs named "
                f"{', '.join(s.name for s in specs)}; missing {', '.join(missing)}")
        pairs = [by_name[s.name] for s in specs]
    for spec, (item, _) in zip(specs, pairs, strict=True):
        check_batch(spec, item.shape, service.max_batch)
    limit = service.max_elements(model, split_point)
    return [input_tensor(item, payload, limit) for item, payload in pairs]


def check_batch(spec: TensorSpec, shape: list[int], max_batch: int) -> None:
    """Refuse a declared shape whose batch is over the server's limit, saying that limit
    (before its element count, which would say less, is checked)."""
    dim = spec.batch_dim
    if spec.free or dim is None or len(shape) != len(spec.shape) or spec.shape[dim] <= 0:
        return
    batch = shape[dim] // spec.shape[dim] if isinstance(shape[dim], int) else 0
    if batch > max_batch:
        raise WireFormatError(f"{spec.name} holds a batch of {str(batch)[:24]} rows, over this "
                              f"server's limit (max {max_batch} rows): send at most "
                              f"{max_batch} samples in one request")


def decode_offload(service: CloudService, body: bytes) -> tuple[OffloadRequest,
                                                                list[torch.Tensor]]:
    """A thesis /offload body: the request (split point checked) and the cut's tensors."""
    try:
        request = OffloadRequest.model_validate_json(body)
    except ValidationError as exc:
        raise WireFormatError(first_validation_error(exc)) from exc
    service.split(request.model).check_split_point(request.splitting_point)
    service.check_digest(request.model, request.model_digest)
    return request, offload_tensors(service, request)


def offload_tensors(service: CloudService, req: OffloadRequest) -> list[torch.Tensor]:
    """Decode the thesis's base64 tensor(s); the shape comes from the model and split point."""
    try:
        raw = base64.b64decode(req.tensor, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireFormatError(f"tensor is not valid base64: {exc}") from exc
    specs = service.split(req.model).split_points[req.splitting_point].tensors
    datatype = datatype_of(req.dtype)
    if req.shape is not None:
        if len(specs) != 1:
            raise WireFormatError("an explicit shape works only where one tensor crosses the cut")
        return [decode_tensor(raw, req.shape, datatype,
                              max_elements=service.max_elements(req.model, req.splitting_point))]
    tensors, offset = [], 0
    itemsize = torch_dtype(req.dtype).itemsize
    for spec in specs:
        size = math.prod(spec.shape) * itemsize
        tensors.append(decode_tensor(raw[offset:offset + size], spec.shape, datatype))
        offset += size
    if offset != len(raw):
        raise WireFormatError(
            f"split point {req.splitting_point} of {req.model} takes {offset} bytes of "
            f"{req.dtype}, got {len(raw)}")
    return tensors
