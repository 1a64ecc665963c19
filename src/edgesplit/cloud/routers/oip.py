"""The Open Inference Protocol v2: health, server and model metadata, and inference.

The split point is the request parameter ``split_point``, 0 when absent, so a plain OIP client
gets a whole inference. Every model route also has OIP's versioned form
(``/v2/models/{model}/versions/{version}/...``); without one, the latest version answers. A
request parameter ``model_digest`` that is not the answering version's digest gets 409.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam

from edgesplit.cloud.body import body_limit
from edgesplit.cloud.catalog import Catalog
from edgesplit.cloud.decoding import datatype_of, decode_infer
from edgesplit.cloud.schemas import INFER_BODY_SCHEMA
from edgesplit.cloud.state import CloudState, cloud_state
from edgesplit.cloud.tail import TailCall, run_tail_request
from edgesplit.core.splitting import TensorSpec
from edgesplit.errors import UnknownModel
from edgesplit.wire.codecs import encode_tensor
from edgesplit.wire.protocol import HEADER_LENGTH, InferenceRequest, encode_response


def router(served_models: list[str] | None) -> APIRouter:
    """The OIP routes; ``served_models`` names the models in the OpenAPI schema (None: not
    known in advance, a model repository's)."""
    api = APIRouter()
    # The served models, named in the OpenAPI schema (any other name still gets a 404 here).
    served = PathParam(json_schema_extra=None if served_models is None else
                       {"enum": served_models})

    @api.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/v2/health/ready")
    async def ready(cloud: CloudState = Depends(cloud_state)) -> dict[str, bool]:
        return {"ready": cloud.runner is not None}

    @api.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "edgesplit", "version": "1",
                "extensions": ["binary_tensor_data", "edgesplit_split_point"]}

    @api.get("/v2/models/{model}")
    async def model_metadata(model: str = served,
                             cloud: CloudState = Depends(cloud_state)) -> dict[str, Any]:
        return metadata(cloud.service.catalog, model, None)

    @api.get("/v2/models/{model}/versions/{version}")
    async def version_metadata(version: str, model: str = served,
                               cloud: CloudState = Depends(cloud_state)) -> dict[str, Any]:
        return metadata(cloud.service.catalog, model, version)

    @api.get("/v2/models/{model}/ready")
    async def model_ready(model: str = served,
                          cloud: CloudState = Depends(cloud_state)) -> dict[str, Any]:
        return readiness(cloud.service.catalog, model, None)

    @api.get("/v2/models/{model}/versions/{version}/ready")
    async def version_ready(version: str, model: str = served,
                            cloud: CloudState = Depends(cloud_state)) -> dict[str, Any]:
        return readiness(cloud.service.catalog, model, version)

    @api.post("/v2/models/{model}/infer", openapi_extra=INFER_BODY_SCHEMA)
    async def infer(request: Request, model: str = served,
                    cloud: CloudState = Depends(cloud_state)) -> Response:
        return await run_infer(request, cloud.service.catalog.resolve(model), cloud)

    @api.post("/v2/models/{model}/versions/{version}/infer", openapi_extra=INFER_BODY_SCHEMA)
    async def version_infer(request: Request, version: str, model: str = served,
                            cloud: CloudState = Depends(cloud_state)) -> Response:
        return await run_infer(request, cloud.service.catalog.resolve(model, version), cloud)

    return api


def metadata(catalog: Catalog, model: str, version: str | None) -> dict[str, Any]:
    """``GET /v2/models/{model}[/versions/{v}]``: inputs, outputs and every split point with
    its tensors, of that version (the latest without one); every version with its digest."""
    served = catalog.entry(catalog.resolve(model, version))
    split = served.split
    points = [sp for sp in split.split_points
              if served.split_points is None or sp.split_point in served.split_points]
    return {
        "name": model,
        "versions": catalog.versions(model),
        "platform": "pytorch",
        "inputs": [_tensor(t, t.open_shape) for t in split.split_points[0].tensors],
        "outputs": [_tensor(t, t.open_shape) for t in split.outputs],
        "parameters": {
            "version": served.version, "model_digest": served.digest,
            "model_versions": [{k: row[k] for k in ("version", "state", "reason", "digest")}
                               for row in catalog.index() if row["name"] == model],
            "split_points": [
                {"split_point": sp.split_point, "layer": sp.layer, "layer_type": sp.layer_type,
                 "offload_bytes": sp.offload_bytes,
                 "tensors": [_tensor(t, list(t.shape)) for t in sp.tensors]}
                for sp in points]},
    }


def readiness(catalog: Catalog, model: str, version: str | None) -> dict[str, Any]:
    """A version is ready when served; a broken one is not (and says why); unknown: 404."""
    try:
        served = catalog.entry(catalog.resolve(model, version))
    except UnknownModel:
        broken = next((u for u in catalog.unavailable
                       if u.name == model and u.version == version), None)
        if broken is None:
            raise
        return {"name": model, "version": version, "ready": False, "reason": broken.reason}
    return {"name": model, "version": served.version, "ready": True}


def _tensor(spec: TensorSpec, shape: list[int]) -> dict[str, Any]:
    """One tensor in the metadata (shape: with -1 where it follows the batch, or at batch 1)."""
    return {"name": spec.name, "datatype": datatype_of(spec.dtype), "shape": shape}


async def run_infer(request: Request, model: str, cloud: CloudState) -> Response:
    """Run one OIP request for the version keyed ``model`` (resolved before the body is read,
    so an unknown model is a 404 first)."""
    served = cloud.service.served(model)
    header_length = request.headers.get(HEADER_LENGTH)

    def decode(body: bytes) -> TailCall[InferenceRequest]:
        parsed, split_point, tensors = decode_infer(cloud.service, model, body, header_length)
        return TailCall(parsed, model, split_point, tensors)

    answer = await run_tail_request(request, cloud, decode, *body_limit(request, cloud.settings))
    parsed, result = answer.call.request, answer.result
    binary = bool(parsed.parameters.get("binary_data_output", False)) or any(
        o.parameters.get("binary_data") for o in parsed.outputs)
    timings = {"split_point": answer.call.split_point, "cloud_s": answer.cloud_s,
               "compute_s": result.compute_s, "queue_s": result.queue_s,
               "layer_times_s": result.layer_times_s, "batch_size": result.batch_size,
               **result.load}
    outputs = [encode_tensor(tensor, name=spec.name) for tensor, spec in
               zip(result.outputs, served.split.outputs, strict=True)]
    content, headers = encode_response(served.name, outputs, timings, binary=binary,
                                       request_id=parsed.id, version=served.version)
    return Response(content, headers=headers)
