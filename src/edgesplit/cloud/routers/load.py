"""``GET /edgesplit/load``: what the cloud holds, per model and split point, and the wait a new
request can expect (every answer carries its own model and split point's share of this)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from edgesplit.cloud.state import CloudState, cloud_state

router = APIRouter()


@router.get("/edgesplit/load")
async def load(cloud: CloudState = Depends(cloud_state)) -> dict[str, Any]:
    """``slots`` (tails run at once), ``queue_length``, ``expected_wait_s`` and per model and
    split point ``queued`` (waiting or running) and ``tail_s`` (one request's recent tail)."""
    return cloud.tails.meter.status()
