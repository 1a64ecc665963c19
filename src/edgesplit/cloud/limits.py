"""Bounds on what requests may hold: pending tails, and the size and pace of bodies."""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse
from prometheus_client import Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgesplit.cloud.errors import STATUS, Overloaded, PayloadTooLarge, RequestTimeout


class Admission:
    """Counts requests past the door; refuses the one over ``limit`` (bounded queueing)."""

    def __init__(self, limit: int, gauge: Gauge) -> None:
        self.limit = limit
        self.pending = 0
        self.gauge = gauge

    def __enter__(self) -> Admission:
        if self.pending >= self.limit:
            raise Overloaded(f"the server is busy ({self.pending} requests pending): retry later")
        self.pending += 1
        self.gauge.set(self.pending)
        return self

    def __exit__(self, *exc: object) -> None:
        self.pending -= 1
        self.gauge.set(self.pending)


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before it is read into memory, and a
    body that stalls for ``timeout_s`` between chunks gets 408 (no slow-loris)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        message = (f"the request body is over the {limit} byte limit: send less or raise "
                   "--max-body-mb")
        for key, value in scope["headers"]:
            if key == b"content-length" and (not value.isdigit() or int(value) > limit):
                await send_error(send, 413, message)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            try:
                msg = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                raise RequestTimeout(f"the request body stalled for {self.timeout_s:g} s") from None
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(message)
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except (PayloadTooLarge, RequestTimeout) as exc:
            if not started:
                await send_error(send, STATUS[type(exc)], str(exc))


async def send_error(send: Send, status: int, message: str) -> None:
    """Answer ``{"error": message}`` with ``status`` straight on the ASGI channel."""
    body = JSONResponse({"error": message}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
