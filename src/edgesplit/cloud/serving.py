"""Serving the app with uvicorn, behind a guard on connections and the HTTP parser.

uvicorn's httptools protocol sets no limit on the request line and headers, none on how long a
head may take, and none on how many connections are open: one connection streaming an endless
header held the event loop for minutes (httptools copies the part of a header value it has so
far on every chunk), connections that sent nothing stayed open for ever and held the server at
its file-descriptor limit, and heads of thousands of tiny header lines cost about 1 MiB each.
``GuardedHttpTools`` (its limits in ``HeadLimits``):

- counts the bytes of each request's head as they arrive, and its header lines, and answers 431
  and closes the connection past ``max_head_bytes`` or ``max_header_lines``, before handing more
  to the parser. Only the head of the request being read counts: pipelined requests that came
  before it in the same chunk do not;
- charges every unfinished head (its bytes, and ``LINE_COST`` per header line for the parser's
  objects) to a budget shared by all connections, ``max_heads_bytes``; a head that would take it
  over gets 503 and its connection is closed. A head that arrives whole in one chunk (every
  ordinary client's) is never charged;
- gives a head ``head_timeout_s`` from the connection's start (or from its first byte, after
  a keep-alive answer) to arrive whole, as nginx's ``client_header_timeout``: then 408 and the
  connection closed. While a request is being served the deadline waits;
- keeps at most ``max_connections`` open: a new connection past it closes the one that has waited
  longest without a request in progress (nothing sent, an unfinished head, or idle between
  keep-alive requests), as nginx does with idle keep-alive connections; only when every one is
  busy is the newcomer answered 503 and closed. Descriptors thus stay below the process's limit
  and health probes and real clients are still served;
- answers a client that half-closes its side mid-body (a body shorter than its Content-Length):
  uvicorn would drop the connection with no answer; here the app sees the body end early and
  says 400.
"""

from __future__ import annotations

import asyncio
import json
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgesplit.cloud.settings import ServerSettings

# What the parser holds per header line beyond its bytes (two bytes objects and a tuple in
# uvicorn's list of headers): charged to the server-wide budget of unfinished heads.
LINE_COST = 256
MIB = 1024 * 1024


@dataclass(frozen=True)
class HeadLimits:
    """The guard's limits (``ServerSettings`` has their defaults and help)."""

    max_head_bytes: int = 64 * 1024
    max_header_lines: int = 100
    head_timeout_s: float = 10.0
    max_connections: int = 1000
    max_heads_bytes: int = 16 * MIB


def connection_limit(reserve_min: int = 128) -> int:
    """Connections one server keeps open by default: below the soft descriptor limit
    (``RLIMIT_NOFILE``) by an eighth of it plus ``reserve_min``, which leaves room for the
    model files, threads and pipes, and for the connections accepted in one burst (see
    ``accept_backlog``) before the oldest idle ones are closed."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft - reserve_min - soft // 8)


def accept_backlog(max_connections: int) -> int:
    """The listen backlog, so that one burst of accepts (asyncio takes up to the backlog at
    once) stays within the reserve that ``connection_limit`` leaves (uvicorn's default: 2048)."""
    return max(16, min(2048, max_connections // 8))


@dataclass
class _Shared:
    """What the connections of one server share."""

    idle: dict[GuardedHttpTools, None] = field(default_factory=dict)  # oldest first
    open: int = 0
    heads_held: int = 0  # bytes charged for unfinished heads, all connections


class HeadTooLarge(Exception):
    """Raised inside the parser's callbacks to stop it at a head over the limit."""


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guard described in this module's docstring.
    ``limits`` and ``shared`` are set per server by ``guarded_protocol``."""

    limits: ClassVar[HeadLimits] = HeadLimits()
    shared: ClassVar[_Shared] = _Shared()
    _in_head = False
    _began_here = False  # a head began within the chunk being parsed
    _head_bytes = 0  # bytes of the unfinished head received so far
    _parsed_bytes = 0  # the URL, names and values the parser has handed over
    _lines = 0  # header lines of this head
    _charged = 0  # what this connection holds of ``shared.heads_held``
    _refusal: str | None = None  # why the parser was stopped
    _head_timer: asyncio.TimerHandle | None = None
    _last_word: bytes | None = None  # a refusal waiting for the answers before it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.shared.open += 1
        self._arm_head_timer()
        self._set_idle(True)
        if self.shared.open > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self.shared.open -= 1
        self._set_idle(False)
        self._charge(0)
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _make_room(self) -> None:
        """Over the limit: close the connection idle longest, or, none idle, this one."""
        oldest = next((c for c in self.shared.idle if c is not self), None)
        if oldest is not None:
            oldest._set_idle(False)
            oldest.transport.close()
            return
        self._answer(503, "Service Unavailable",
                     f"the server has {self.limits.max_connections} connections open, its "
                     "limit: retry later")

    def _set_idle(self, idle: bool) -> None:
        self.shared.idle.pop(self, None)
        if idle:
            self.shared.idle[self] = None  # to the end: the newest

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout_s,
                                                    self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._serving():
            self._arm_head_timer()  # a request is being served: reading waits for it
            return
        self._answer(408, "Request Timeout",
                     f"the request line and headers did not arrive within "
                     f"{self.limits.head_timeout_s:g} s")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._began_here = True
        self._head_bytes = self._parsed_bytes = self._lines = 0
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._lines += 1
        if self._lines > self.limits.max_header_lines:
            self._refusal = f"the request has over {self.limits.max_header_lines} header lines"
            raise HeadTooLarge
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        self._set_idle(False)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._serving() or self.transport.is_closing():
            return
        if self._last_word is not None:  # the answers before it are out: now the refusal
            self.transport.write(self._last_word)
            self.transport.close()
        else:
            self._set_idle(True)

    def _serving(self) -> bool:
        """Whether a request of this connection is being served or waits in its pipeline."""
        return (self.cycle is not None and not self.cycle.response_complete) or bool(
            self.pipeline)

    def _count(self, nbytes: int) -> None:
        """A head that arrived whole in one chunk is measured as the parser hands it over; the
        parser turns the exception into uvicorn's 400, which ``send_400_response`` makes 431."""
        self._parsed_bytes += nbytes
        if self._parsed_bytes > self.limits.max_head_bytes:
            self._refusal = self._too_long()
            raise HeadTooLarge

    def _too_long(self) -> str:
        return f"the request line and headers are over the {self.limits.max_head_bytes} " \
               "byte limit"

    def data_received(self, data: bytes) -> None:
        """Feed the parser no more than the unfinished head may still take, so a head over the
        limit is refused before the parser copies it once more."""
        while data and not self.transport.is_closing() and self._last_word is None:
            if self._in_head and self._head_bytes >= self.limits.max_head_bytes:
                self._answer(431, "Request Header Fields Too Large", self._too_long())
                return
            room = self.limits.max_head_bytes - self._head_bytes if self._in_head else len(data)
            piece, data = data[:room], data[room:]
            self._feed(piece)

    def _feed(self, piece: bytes) -> None:
        continued = self._in_head  # a head from an earlier chunk, unless a new one begins
        self._began_here = False
        super().data_received(piece)
        if not self._in_head or self.transport.is_closing():
            self._charge(0)
            return
        if continued and not self._began_here:
            self._head_bytes += len(piece)
        else:  # began in this piece: what the parser took of it, and the line it is inside
            self._head_bytes = self._parsed_bytes + len(piece) - piece.rfind(b"\n") - 1
        if self._head_bytes > self.limits.max_head_bytes:
            self._answer(431, "Request Header Fields Too Large", self._too_long())
        elif not self._charge(self._head_bytes + LINE_COST * self._lines):
            self._answer(503, "Service Unavailable",
                         f"the server holds {self.shared.heads_held} bytes of unfinished "
                         "request heads, its limit: retry later")

    def _charge(self, nbytes: int) -> bool:
        """Hold ``nbytes`` of the shared budget (0: give it back); False past the budget."""
        held = self.shared.heads_held - self._charged
        if nbytes and held + nbytes > self.limits.max_heads_bytes:
            self._charge(0)
            return False
        self.shared.heads_held = held + nbytes
        self._charged = nbytes
        return True

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._answer(431, "Request Header Fields Too Large", self._refusal)
        else:
            super().send_400_response(msg)

    def _answer(self, status: int, reason: str, message: str) -> None:
        """``status`` and close: nothing of this request reaches the app. Pipelined requests
        before it get their answers first (what arrives meanwhile is dropped)."""
        self._in_head = False
        self._charge(0)
        self._set_idle(False)
        self._disarm_head_timer()
        body = json.dumps({"error": message}).encode()
        self._last_word = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: "
            f"close\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
        if self._serving():
            self.flow.pause_reading()
            return
        self.transport.write(self._last_word)
        self.transport.close()

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio allows True
        """The client closed its side. Mid-body, end the body there (the app answers that it is
        short of its Content-Length) and keep the connection open to send that answer."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.more_body:
            return None
        cycle.more_body = False
        cycle.keep_alive = False
        cycle.message_event.set()
        return True


def head_limits(settings: ServerSettings) -> HeadLimits:
    """The guard's limits from the server's settings."""
    return HeadLimits(max_head_bytes=settings.max_header_kb * 1024,
                      max_header_lines=settings.max_header_lines,
                      head_timeout_s=settings.head_timeout_s,
                      max_connections=settings.max_connections or connection_limit(),
                      max_heads_bytes=int(settings.max_heads_mb * MIB))


def guarded_protocol(limits: HeadLimits) -> type[GuardedHttpTools]:
    """``GuardedHttpTools`` with its own limits and its own shared state (one per server)."""
    return type("GuardedHttpTools", (GuardedHttpTools,), {"limits": limits, "shared": _Shared()})


def serve(app: ASGIApp, host: str, port: int, *, limits: HeadLimits, log_level: str,
          tls_cert: Path | None = None, tls_key: Path | None = None, **options: Any) -> None:
    """Run ``app`` with uvicorn behind the guard, until it is stopped (SIGINT, SIGTERM)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                http=guarded_protocol(limits), ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                backlog=accept_backlog(limits.max_connections),
                timeout_graceful_shutdown=30, **options)
