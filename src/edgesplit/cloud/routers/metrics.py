"""``GET /metrics`` for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edgesplit.cloud.state import CloudState, cloud_state

router = APIRouter()


@router.get("/metrics")
async def prometheus(cloud: CloudState = Depends(cloud_state)) -> Response:
    return Response(generate_latest(cloud.metrics.registry), media_type=CONTENT_TYPE_LATEST)
