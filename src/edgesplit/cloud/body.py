"""Reading request bodies within bounds: a server-wide budget of bytes held, a size limit per
kind of body, and the signed digest checked on the bytes as they arrive."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request

from edgesplit.cloud.errors import Overloaded, PayloadTooLarge
from edgesplit.errors import WireFormatError
from edgesplit.wire.auth import check_body


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
