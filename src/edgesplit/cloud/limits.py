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

    def check(self) -> None:
        """Refuse now if no slot is free (before the body is read); take none."""
        if self.pending >= self.limit:
            raise Overloaded(f"the server is busy ({self.pending} requests pending): retry later")

    def __enter__(self) -> Admission:
        self.check()
        self.pending += 1
        self.gauge.set(self.pending)
        return self

    def __exit__(self, *exc: object) -> None:
        self.pending -= 1
        self.gauge.set(self.pending)


class BodyPace:
    """ASGI middleware: a declared body over ``max_bytes`` gets 413 before a byte of it is read;
    a body must arrive within ``grace_s`` plus one second per ``min_rate`` bytes received (a
    deadline for the whole body, not per chunk), else 408."""

    def __init__(self, app: ASGIApp, max_bytes: int, grace_s: float = 30.0,
                 min_rate: float = 16 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.grace_s = grace_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (f"the request body is over the {self.max_bytes} byte limit: send less or "
                   "raise --max-body-mb")
        if not _declared_within(scope, self.max_bytes):
            await send_error(send, 413, message)
            return
        paced = _PacedReceive(receive, self.grace_s, self.min_rate, self.max_bytes, message)
        started = False

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, paced, tracking_send)
        except (PayloadTooLarge, RequestTimeout) as exc:
            if not started:
                await send_error(send, STATUS[type(exc)], str(exc))


def _declared_within(scope: Scope, limit: int) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-length" and (not value.isdigit() or int(value) > limit):
            return False
    return True


class _PacedReceive:
    """``receive`` with a deadline that grows with the bytes received, and a size limit."""

    def __init__(self, receive: Receive, grace_s: float, min_rate: float, limit: int,
                 message: str) -> None:
        self.receive = receive
        self.grace_s = grace_s
        self.min_rate = min_rate
        self.limit = limit
        self.message = message
        self.began: float | None = None
        self.received = 0
        self.done = False  # the whole body arrived: later receives wait for a disconnect

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()
        loop = asyncio.get_running_loop()
        if self.began is None:
            self.began = loop.time()
        deadline = self.began + self.grace_s + self.received / self.min_rate
        try:
            msg = await asyncio.wait_for(self.receive(), max(deadline - loop.time(), 0.0))
        except TimeoutError:
            raise RequestTimeout(
                f"the request body stalled: {self.received} bytes in "
                f"{loop.time() - self.began:.0f} s, under the {self.min_rate / 1024:g} KiB/s "
                "this server requires after its grace time") from None
        if msg["type"] == "http.request":
            self.received += len(msg.get("body", b""))
            if self.received > self.limit:
                raise PayloadTooLarge(self.message)
        self.done = not msg.get("more_body", False)
        return msg


async def send_error(send: Send, status: int, message: str) -> None:
    """Answer ``{"error": message}`` with ``status`` straight on the ASGI channel, and close
    the connection after it (what is left of the body is not read)."""
    body = JSONResponse({"error": message}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})  # the body is not read further
    await send({"type": "http.response.body", "body": body})
