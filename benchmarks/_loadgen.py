"""A light closed-loop HTTP/1.1 load generator for the throughput benchmarks.

The clients share this machine's two cores with the server under test, so every millisecond of
CPU they spend is taken from the server. httpx's async client spent about as much CPU per
request as the servers did; these clients write each request's bytes, built once, on a raw
asyncio stream and read the answer by its ``Content-Length``, on uvloop where it is installed.
They speak what both servers answer: HTTP/1.1 with keep-alive (uvicorn) and HTTP/1.0 that closes
after each answer (werkzeug), reconnecting when the server closes.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Result:
    throughput: float
    p50_ms: float
    p99_ms: float
    errors: int


def raw_request(url: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The whole POST as bytes, built once and sent as it is by every client."""
    host = urlsplit(url).netloc
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> tuple[int, bool]:
    """Send ``request``, read its whole answer; (status, whether the connection stays open)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].split(b"\r\n")
    version, status = status_line.split(b" ", 2)[:2]
    fields = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip().lower()
    if b"chunked" in fields.get(b"transfer-encoding", b""):
        raise RuntimeError("chunked answers are not read by this load generator")
    if b"content-length" in fields:
        await reader.readexactly(int(fields[b"content-length"]))
        keep = version == b"HTTP/1.1" and fields.get(b"connection") != b"close"
    else:  # the answer runs until the server closes
        await reader.read()
        keep = False
    return int(status), keep


async def closed_loop(url: str, request: bytes, concurrency: int, seconds: float) -> Result:
    """``concurrency`` clients, each sending the next request when its answer arrives; a short
    warm-up first, then ``seconds`` measured. A non-200 answer or a broken exchange is an
    error."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    errors = 0

    async def one_client(until: float, record: bool) -> None:
        nonlocal errors
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.monotonic() < until:
            began = time.perf_counter()
            try:
                if connection is None:
                    connection = await asyncio.open_connection(host, port)
                status, keep = await exchange(*connection, request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status, keep = 0, False
            if not keep and connection is not None:
                connection[1].close()
                connection = None
            if not record:
                continue
            if status == 200:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1
        if connection is not None:
            connection[1].close()

    warm = time.monotonic() + min(1.0, seconds / 4)
    await asyncio.gather(*(one_client(warm, False) for _ in range(concurrency)))
    began = time.monotonic()
    await asyncio.gather(*(one_client(began + seconds, True) for _ in range(concurrency)))
    elapsed = time.monotonic() - began
    latencies.sort()
    if not latencies:
        return Result(0.0, float("nan"), float("nan"), errors)
    return Result(len(latencies) / elapsed, statistics.median(latencies) * 1e3,
                  latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3, errors)


def run(url: str, request: bytes, concurrency: int, seconds: float) -> Result:
    """``closed_loop`` on uvloop where it is installed (it is with the server's extra)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(closed_loop(url, request, concurrency, seconds))
    return uvloop.run(closed_loop(url, request, concurrency, seconds))
