"""The repository index (Triton's model repository extension): every model version the cloud
knows, its state (``READY`` or ``UNAVAILABLE``, with the reason) and its digest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from edgesplit.cloud.state import CloudState, cloud_state

router = APIRouter()


class IndexRequest(BaseModel):
    """Triton's request body: ``{"ready": true}`` lists only the versions ready to serve."""

    model_config = ConfigDict(extra="forbid")
    ready: bool = False


@router.post("/v2/repository/index")
async def index(query: IndexRequest | None = None,
                cloud: CloudState = Depends(cloud_state)) -> list[dict[str, Any]]:
    rows = cloud.service.catalog.index()
    return [r for r in rows if r["state"] == "READY"] if query and query.ready else rows


@router.get("/v2/repository/index")
async def index_get(cloud: CloudState = Depends(cloud_state)) -> list[dict[str, Any]]:
    return cloud.service.catalog.index()
