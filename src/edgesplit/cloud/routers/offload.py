"""The thesis's ``POST /offload``: base64 raw little-endian tensors, unchanged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from edgesplit.cloud.body import body_limit
from edgesplit.cloud.decoding import OffloadRequest, decode_offload
from edgesplit.cloud.schemas import OFFLOAD_BODY_SCHEMA
from edgesplit.cloud.state import CloudState, cloud_state
from edgesplit.cloud.tail import TailCall, run_tail_request
from edgesplit.core.splitting import top1

router = APIRouter()


@router.post("/offload", openapi_extra=OFFLOAD_BODY_SCHEMA)
async def offload(request: Request, cloud: CloudState = Depends(cloud_state)) -> dict[str, Any]:
    def decode(body: bytes) -> TailCall[OffloadRequest]:
        req, tensors = decode_offload(cloud.service, body)
        # The version resolved once: a repository update meanwhile cannot mix two.
        return TailCall(req, cloud.service.served(req.model).key, req.splitting_point, tensors)

    # A JSON body: held to the JSON limit, refused before it is read when its length says so
    # and as it streams in otherwise (base64 in JSON costs several times its size to decode).
    answer = await run_tail_request(request, cloud, decode, *body_limit(request, cloud.settings))
    req, result = answer.call.request, answer.result
    output = result.outputs[0]  # the thesis's answer has one output; all are in "outputs"
    specs = cloud.service.split(answer.call.model).outputs
    return {"model": req.model, "splitting_point": req.splitting_point,
            "shape": list(output.shape), "output": output.reshape(-1).tolist(),
            "prediction": int(top1(output)[0]),  # the first sample's
            "outputs": [{"name": spec.name, "shape": list(t.shape), "dtype": spec.dtype,
                         "data": t.reshape(-1).tolist()}
                        for t, spec in zip(result.outputs, specs, strict=True)],
            "cloud_s": answer.cloud_s, "compute_s": result.compute_s,
            "layer_times_s": result.layer_times_s, "batch_size": result.batch_size,
            **result.load}
