"""``POST /edgesplit/probe``: the edge times an upload here to measure its uplink when idle."""

from __future__ import annotations

from fastapi import APIRouter, Request

from edgesplit.cloud.body import counted_body

router = APIRouter()


@router.post("/edgesplit/probe")
async def probe(request: Request) -> dict[str, int]:
    """Swallow a body and say how many bytes it had: counted as they arrive, none kept."""
    return {"received": await counted_body(request)}
