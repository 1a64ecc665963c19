"""The thesis's ``POST /offload``: base64 raw little-endian tensors, unchanged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from edgesplit.cloud.decoding import OffloadRequest, decode_offload
from edgesplit.cloud.schemas import OFFLOAD_BODY_SCHEMA
from edgesplit.cloud.state import CloudState, cloud_state
from edgesplit.cloud.tail import TailCall, run_tail_request

router = APIRouter()


@router.post("/offload", openapi_extra=OFFLOAD_BODY_SCHEMA)
async def offload(request: Request, cloud: CloudState = Depends(cloud_state)) -> dict[str, Any]:
    def decode(body: bytes) -> TailCall[OffloadRequest]:
        req, tensors = decode_offload(cloud.service, body)
        return TailCall(req, req.model, req.splitting_point, tensors)

    answer = await run_tail_request(request, cloud, decode)
    req, result = answer.call.request, answer.result
    output = result.output
    return {"model": req.model, "splitting_point": req.splitting_point,
            "shape": list(output.shape), "output": output.reshape(-1).tolist(),
            "prediction": int(output.reshape(output.shape[0], -1).argmax(1)[0]),
            "cloud_s": answer.cloud_s, "compute_s": result.compute_s,
            "layer_times_s": result.layer_times_s}
