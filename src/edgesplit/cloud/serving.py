"""Serving the app with uvicorn, behind a guard on the HTTP parser.

uvicorn's httptools protocol sets no limit on the request line and headers, and httptools copies
the part of a header value it has so far on every chunk: one connection streaming an endless
header held the event loop for minutes. ``GuardedHttpTools`` counts the bytes of each request's
head as they arrive and answers 431 and closes the connection past ``max_head_bytes``, before
handing more to the parser. It also answers a client that half-closes its side mid-body (a body
shorter than its Content-Length): uvicorn would drop the connection with no answer; here the app
sees the body end early and says 400.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadTooLarge(Exception):
    """Raised inside the parser's callbacks to stop it at a head over the limit."""


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a limit on each request's head and half-close
    answered. ``max_head_bytes`` is set by ``guarded_protocol``."""

    max_head_bytes = 64 * 1024
    _in_head = False
    _head_bytes = 0  # raw bytes received while the head was incomplete
    _parsed_bytes = 0  # the URL, names and values the parser has handed over
    _head_refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._parsed_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _count(self, nbytes: int) -> None:
        """A head that arrived whole in one chunk is measured as the parser hands it over; the
        parser turns the exception into uvicorn's 400, which ``send_400_response`` makes 431."""
        self._parsed_bytes += nbytes
        if self._parsed_bytes > self.max_head_bytes:
            self._head_refused = True
            raise HeadTooLarge

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._head_bytes + len(data) > self.max_head_bytes:
            self._refuse_head()  # before the parser copies a partial head once more
            return
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():  # the head is still incomplete
            self._head_bytes += len(data)

    def send_400_response(self, msg: str) -> None:
        if self._head_refused:
            self._refuse_head()
        else:
            super().send_400_response(msg)

    def _refuse_head(self) -> None:
        """431 and close: the head is over the limit (nothing of it reaches the app)."""
        self._in_head = False
        body = json.dumps({"error": f"the request line and headers are over the "
                                    f"{self.max_head_bytes} byte limit"}).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json"
            b"\r\nconnection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)
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


def guarded_protocol(max_head_bytes: int) -> type[GuardedHttpTools]:
    """``GuardedHttpTools`` with its own head limit."""
    return type("GuardedHttpTools", (GuardedHttpTools,), {"max_head_bytes": max_head_bytes})


def serve(app: ASGIApp, host: str, port: int, *, max_head_bytes: int, log_level: str,
          tls_cert: Path | None = None, tls_key: Path | None = None, **options: Any) -> None:
    """Run ``app`` with uvicorn behind the guard, until it is stopped (SIGINT, SIGTERM)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                http=guarded_protocol(max_head_bytes), ssl_certfile=tls_cert,
                ssl_keyfile=tls_key, timeout_graceful_shutdown=30, **options)
