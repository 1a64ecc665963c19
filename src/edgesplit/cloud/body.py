"""Reading request bodies within bounds: a server-wide budget of bytes held, a size limit per
kind of body, and the signed digest checked on the bytes as they arrive."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request

from edgesplit.cloud.errors import Overloaded, PayloadTooLarge
from edgesplit.cloud.settings import ServerSettings
from edgesplit.errors import WireFormatError
from edgesplit.wire.auth import check_body
from edgesplit.wire.protocol import HEADER_LENGTH

OFFLOAD_JSON = ("JSON request (send large tensors as binary data to "
                "/v2/models/{model}/infer)")


class BodyBudget:
    """The bytes of request bodies held at once, server-wide. A body that would take the total
    over ``limit`` is refused with 503 (before it is read when its length is declared), so
    memory for bodies stays bounded however many connections arrive."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def check(self, nbytes: int) -> None:
        if self.held + nbytes > self.limit:
            raise Overloaded(f"the server holds {self.held} bytes of request bodies and cannot "
                             f"take {nbytes} more now: retry later")

    def take(self, nbytes: int) -> None:
        self.check(nbytes)
        self.held += nbytes

    def give_back(self, nbytes: int) -> None:
        self.held -= nbytes


def declared_length(request: Request) -> int | None:
    """The Content-Length (``BodyPace`` has already refused one that is not a number)."""
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def body_limit(request: Request, settings: ServerSettings) -> tuple[int, str]:
    """The size limit of a request's body, and what to call it when it is over: JSON costs far
    more memory per byte than binary tensors, so ``/offload`` and a JSON inference request (or
    the JSON header of a binary one) are held to ``max_json_mb``, checked before the body is
    read. The built-in server's routes and the Ray backend's front use the same limits."""
    if request.url.path == "/offload":
        return settings.max_json_bytes, OFFLOAD_JSON
    if not request.url.path.endswith("/infer"):
        return settings.max_body_bytes, "request body"
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is None:
        return settings.max_json_bytes, "JSON request (send tensors as binary data)"
    if header_length.isdigit() and int(header_length) > settings.max_json_bytes:
        raise PayloadTooLarge(f"the request's JSON header is over the {settings.max_json_bytes} "
                              "byte limit for JSON: send tensors as binary data")
    return settings.max_body_bytes, "request body"


@asynccontextmanager
async def held_body(request: Request, budget: BodyBudget, limit: int,
                    what: str = "request body") -> AsyncIterator[bytes]:
    """The whole body, counted in ``budget`` until the ``with`` block ends. Refuses a body over
    ``limit``, shorter than its Content-Length, or not matching its signed digest."""
    declared = declared_length(request)
    if declared is not None:
        _within(declared, limit, what)
        budget.check(declared)
    chunks: list[bytes] = []
    taken = 0
    digest = _Digest(request)
    try:
        async for chunk in request.stream():
            budget.take(len(chunk))
            taken += len(chunk)
            _within(taken, limit, what)
            digest.update(chunk)
            chunks.append(chunk)
        _complete(taken, declared)
        digest.check()
        body = b"".join(chunks)
        chunks.clear()  # the body is held once, not twice, while it is used
        yield body
    finally:
        budget.give_back(taken)


async def counted_body(request: Request) -> int:
    """The body's length, read and dropped chunk by chunk (nothing is kept)."""
    received = 0
    digest = _Digest(request)
    async for chunk in request.stream():
        received += len(chunk)
        digest.update(chunk)
    _complete(received, declared_length(request))
    digest.check()
    return received


class _Digest:
    """The SHA-256 of the body, when the request's signature declared one."""

    def __init__(self, request: Request) -> None:
        self.declared: str | None = getattr(request.state, "body_digest", None)
        self.hash = hashlib.sha256() if self.declared is not None else None

    def update(self, chunk: bytes) -> None:
        if self.hash is not None:
            self.hash.update(chunk)

    def check(self) -> None:
        if self.hash is not None and self.declared is not None:
            check_body(self.declared, self.hash.hexdigest())


def _within(nbytes: int, limit: int, what: str) -> None:
    if nbytes > limit:
        raise PayloadTooLarge(f"the {what} is over the {limit} byte limit: send less")


def _complete(received: int, declared: int | None) -> None:
    if declared is not None and received != declared:
        raise WireFormatError(f"the body ended after {received} of the {declared} bytes its "
                              "Content-Length declares")
