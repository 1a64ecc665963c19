"""The Ray backend's front door: the built-in server's guards in front of Ray Serve's proxy.

Serve's proxy (uvicorn in a Ray actor) puts no limit on a request's head (a 128 MiB header
reached a replica and starved readiness probes for 22 s), and streams a body to a replica as it
arrives, so slow uploads held the replica's slots while real inferences timed out. So
``cloud serve --backend ray`` binds Serve's proxy to a private loopback port and serves the
public address with ``Front``, run by the same guarded uvicorn as the built-in server
(``serving.py``: every limit on heads and connections applies here unchanged). Per request,
``Front`` checks the credential on the headers alone (a signature's nonce is left to the
replica, which verifies the request again), refuses past ``--max-pending`` tail requests in
flight in the whole tier (503 with Retry-After, as the built-in server), reads the whole body
within the built-in limits (``BodyPace``'s size and pace, ``BodyBudget``'s server-wide bytes,
the signed digest), and only then forwards it to Serve over loopback. A replica thus only ever
sees whole, authenticated requests, and no more of them than ``--max-pending``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Gauge
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from edgesplit.cloud.body import BodyBudget, body_limit, held_body
from edgesplit.cloud.errors import Overloaded, status_of
from edgesplit.cloud.limits import Admission, BodyPace
from edgesplit.cloud.security import PUBLIC_ROUTES, Authenticator
from edgesplit.cloud.settings import ServerSettings
from edgesplit.errors import EdgesplitError

log = logging.getLogger(__name__)

# Headers about one connection, not the request (RFC 9110 7.6.1), and those each hop sets itself.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"expect", b"host",
                        b"content-length", b"date", b"server"})


def runs_a_tail(method: str, path: str) -> bool:
    """Whether a request is one the built-in server admits against ``--max-pending``."""
    return method == "POST" and (path.endswith("/infer") or path == "/offload")


class Front:
    """The ASGI app in front of Serve's proxy at ``upstream`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, settings: ServerSettings, upstream: str) -> None:
        self.upstream = upstream
        self.auth = Authenticator.from_settings(settings)
        gauge = Gauge("edgesplit_front_pending", "Tail requests forwarded to Ray Serve",
                      registry=CollectorRegistry())
        self.admission = Admission(settings.max_pending, gauge)
        self.budget = BodyBudget(settings.max_bodies_bytes)
        self.settings = settings
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here
        request = Request(scope, receive)
        try:
            await self._forward(request, send)
        except EdgesplitError as exc:
            status = status_of(exc)
            headers = {"Retry-After": "1"} if status == 503 else None
            await JSONResponse({"error": str(exc)}, status, headers)(scope, receive, send)
        except ClientDisconnect:
            log.debug("client left during %s", request.url.path)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = httpx.AsyncClient(
                    base_url=self.upstream, trust_env=False, timeout=httpx.Timeout(None,
                                                                                   connect=10),
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, request: Request, send: Send) -> None:
        if request.url.path not in PUBLIC_ROUTES:
            await self.auth.check(request, spend_nonce=False)
        tail = runs_a_tail(request.method, request.url.path)
        if tail:
            self.admission.check()  # a full tier says so before the body is sent
        limit, what = body_limit(request, self.settings)  # the built-in routes' limits
        async with held_body(request, self.budget, limit, what) as body:
            with self.admission if tail else contextlib.nullcontext():
                await self._relay(request, body, send)

    async def _relay(self, request: Request, body: bytes, send: Send) -> None:
        """Send the whole request to Serve's proxy and its answer back as it comes."""
        assert self.client is not None, "the front's lifespan has not started"
        scope = request.scope
        target = scope["raw_path"].decode("latin-1") + (
            "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        outgoing = self.client.build_request(request.method, target, headers=headers,
                                             content=body)
        async with self._answer(outgoing) as answer:
            await send({"type": "http.response.start", "status": answer.status_code,
                        "headers": [(k, v) for k, v in answer.headers.raw
                                    if k.lower() not in HOP_BY_HOP - {b"content-length"}]})
            async for chunk in answer.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    @asynccontextmanager
    async def _answer(self, outgoing: httpx.Request) -> AsyncIterator[httpx.Response]:
        assert self.client is not None
        started = time.perf_counter()
        try:
            answer = await self.client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            log.warning("Ray Serve's proxy did not answer after %.1f s: %r",
                        time.perf_counter() - started, exc)
            raise Overloaded("the Ray Serve deployment did not answer: retry later") from None
        try:
            yield answer
        finally:
            await answer.aclose()


def front_app(settings: ServerSettings, upstream: str) -> ASGIApp:
    """``Front`` behind the built-in server's body limits (413 past the size, 408 too slow)."""
    return BodyPace(Front(settings, upstream), max_bytes=settings.max_body_bytes,
                    grace_s=settings.body_timeout_s, min_rate=settings.min_body_rate_kb * 1024)
