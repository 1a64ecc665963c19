"""Emulating a slow, distant uplink without root: a rate-limited, delayed TCP relay on loopback.

The relay sits between the edge client and the cloud server. Each direction of each connection
reads a chunk, waits for that direction's token bucket (serialization at the link rate), then hands
the chunk to a delay line that delivers it ``rtt/2`` later (propagation), strictly in order. All
connections share one bucket per direction because they share one link. Nothing is read before
the previous chunk has passed the bucket, so the relay buffers about ``rate * rtt/2`` bytes, not
whatever the sender offers. Rate and round-trip time can be changed from any thread while data
flows, and the link can be cut (``drop_connections``) or made to play a dead cloud
(``set_refusing``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import random
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable

from edgesplit.errors import InvalidArgument

log = logging.getLogger(__name__)

_BYTES_PER_KBIT = 125.0  # 1 kbit = 1000 bit
_QUANTUM_S = 0.05  # a read holds the link at most this long, so a rate change bites quickly
_MIN_READ_BYTES = 1024
_MAX_DELAYED_BYTES = 8 * 1024 * 1024  # per direction of a connection; reached only if a side stalls


class TokenBucket:
    """Bytes allowed through a link of ``rate_bytes_per_s``, with up to ``burst_bytes`` saved up.

    Pure bookkeeping with the time passed in, so it can be tested without sleeping. ``reserve``
    takes the tokens at once and may leave the bucket in debt: a later caller also waits for the
    debt of earlier ones, which is how connections share one link. A rate of ``None`` is unlimited.
    With ``burst_bytes=0`` every chunk waits exactly ``size / rate``, a pure serialization delay.

    >>> bucket = TokenBucket(1000.0, burst_bytes=500, now=0.0)
    >>> bucket.reserve(500, now=0.0), bucket.reserve(1000, now=0.0), bucket.reserve(0, now=0.5)
    (0.0, 1.0, 0.5)
    """

    def __init__(self, rate_bytes_per_s: float | None, burst_bytes: int, now: float) -> None:
        _check_rate(rate_bytes_per_s, "rate_bytes_per_s", "bytes/s")
        if burst_bytes < 0:
            raise InvalidArgument(f"burst_bytes must be 0 or more (got {burst_bytes})")
        self.burst_bytes = burst_bytes
        self._rate = rate_bytes_per_s
        self._tokens = float(burst_bytes)
        self._last = now

    @property
    def rate_bytes_per_s(self) -> float | None:
        return self._rate

    def set_rate(self, rate_bytes_per_s: float | None, now: float) -> None:
        """Change the rate from ``now`` on; a debt left at the old rate is paid at the new one."""
        _check_rate(rate_bytes_per_s, "rate_bytes_per_s", "bytes/s")
        self._refill(now)
        self._rate = rate_bytes_per_s

    def reserve(self, nbytes: int, now: float) -> float:
        """Take ``nbytes`` of tokens; return how many seconds to wait before sending them."""
        if nbytes < 0:
            raise InvalidArgument(f"cannot reserve a negative number of bytes (got {nbytes})")
        self._refill(now)
        if self._rate is None:
            return 0.0
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)
        self._last = max(self._last, now)
        if self._rate is None:
            self._tokens = float(self.burst_bytes)
        else:
            self._tokens = min(float(self.burst_bytes), self._tokens + elapsed * self._rate)


class LinkEmulator:
    """A TCP relay on loopback that makes the path to ``target_host:target_port`` slow and far.

    Point the client at ``127.0.0.1:<port>`` instead of the server. ``rate_kbps`` limits the uplink
    (client to target), ``downlink_kbps`` the other direction (``None`` is unlimited) and each
    direction adds ``rtt_ms / 2`` of delay, give or take up to ``jitter_ms / 2`` drawn uniformly
    for every chunk from a generator seeded with ``seed`` (as netem's ``delay RTT jitter J``;
    chunks still arrive in order, so a late one holds back those behind it). The relay runs its
    own event loop in a daemon thread, so it works under synchronous code; every setter can be
    called from any other thread::

        with LinkEmulator("127.0.0.1", 8000, rate_kbps=2000, rtt_ms=80) as link:
            httpx.post(f"http://127.0.0.1:{link.port}/infer", content=payload)
            link.set_rate_kbps(500)  # from the next chunk on

    A new connection costs no extra round trip (the handshake with the client is local).
    """

    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, rate_kbps: float | None = None, rtt_ms: float = 0.0,
                 downlink_kbps: float | None = None, burst_bytes: int = 16384,
                 chunk_bytes: int = 16384, jitter_ms: float = 0.0, seed: int = 0) -> None:
        _check_port(target_port, "target_port", lowest=1)
        _check_port(listen_port, "listen_port", lowest=0)
        _check_rate(rate_kbps, "rate_kbps", "kbit/s")
        _check_rate(downlink_kbps, "downlink_kbps", "kbit/s")
        _check_rtt(rtt_ms)
        _check_rtt(jitter_ms)
        if burst_bytes < 0:
            raise InvalidArgument(f"burst_bytes must be 0 or more (got {burst_bytes})")
        if chunk_bytes <= 0:
            raise InvalidArgument(f"chunk_bytes must be positive (got {chunk_bytes})")
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.burst_bytes = burst_bytes
        self.chunk_bytes = chunk_bytes
        self.port = listen_port
        self.bytes_up = 0
        self.bytes_down = 0
        self._rate_kbps = rate_kbps
        self._downlink_kbps = downlink_kbps
        self._rtt_ms = float(rtt_ms)
        self._jitter_ms = float(jitter_ms)
        self._random = random.Random(seed)  # only the loop's thread draws from it
        self._refusing = False
        self._http_error: int | None = None
        self._lock = threading.Lock()
        self._state = "new"  # -> "running" -> "stopped"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._up: TokenBucket | None = None
        self._down: TokenBucket | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def rate_kbps(self) -> float | None:
        return self._rate_kbps

    @property
    def downlink_kbps(self) -> float | None:
        return self._downlink_kbps

    @property
    def rtt_ms(self) -> float:
        return self._rtt_ms

    def start(self) -> LinkEmulator:
        """Listen and relay in a daemon thread; return once ``port`` accepts connections."""
        with self._lock:
            if self._state != "new":
                raise InvalidArgument(
                    "this LinkEmulator was already started: create a new one to start again")
            loop = asyncio.new_event_loop()
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            thread = threading.Thread(target=self._run, args=(loop, ready), name="link-emulator",
                                      daemon=True)
            thread.start()
            try:
                ready.result()
            except OSError as exc:
                thread.join()
                self._state = "stopped"
                raise InvalidArgument(
                    f"cannot listen on {self.listen_host}:{self.port} ({exc.strerror or exc}): "
                    f"pass listen_port=0 to use any free port") from exc
            self._loop, self._thread, self._state = loop, thread, "running"
        log.debug("link %s:%d -> %s:%d up %s kbit/s, down %s kbit/s, rtt %g ms", self.listen_host,
                  self.port, self.target_host, self.target_port, self._rate_kbps,
                  self._downlink_kbps, self._rtt_ms)
        return self

    def stop(self) -> None:
        """Close the listener and reset every connection, then end the thread. Idempotent."""
        if self._thread is not None and threading.current_thread() is self._thread:
            raise InvalidArgument("LinkEmulator.stop was called from its own thread: call it "
                                  "from another thread")
        with self._lock:
            if self._state != "running":
                return
            self._state = "stopped"
            assert self._loop is not None and self._thread is not None
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        log.debug("link on port %d stopped", self.port)

    def __enter__(self) -> LinkEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_rate_kbps(self, rate_kbps: float | None) -> None:
        """Set the uplink (client to target) rate; ``None`` is unlimited. Applies from the next
        chunk, and chunks are small enough to last at most about 50 ms at the new rate."""
        _check_rate(rate_kbps, "rate_kbps", "kbit/s")

        def apply() -> None:
            self._rate_kbps = rate_kbps
            self._set_bucket_rate(self._up, rate_kbps)

        self._in_loop(apply)

    def set_downlink_kbps(self, rate_kbps: float | None) -> None:
        """Set the downlink (target to client) rate; ``None`` is unlimited."""
        _check_rate(rate_kbps, "downlink_kbps", "kbit/s")

        def apply() -> None:
            self._downlink_kbps = rate_kbps
            self._set_bucket_rate(self._down, rate_kbps)

        self._in_loop(apply)

    def set_rtt_ms(self, rtt_ms: float) -> None:
        """Set the added round-trip time; data read from now on is delayed ``rtt_ms / 2`` each
        way (data already in flight keeps its delay, and order is always kept)."""
        _check_rtt(rtt_ms)
        self._rtt_ms = float(rtt_ms)

    def set_jitter_ms(self, jitter_ms: float) -> None:
        """Set the jitter: each direction's delay varies by up to ``jitter_ms / 2`` either way."""
        _check_rtt(jitter_ms)
        self._jitter_ms = float(jitter_ms)

    def _one_way_s(self) -> float:
        jitter = self._jitter_ms * (self._random.random() - 0.5) if self._jitter_ms else 0.0
        return max(0.0, self._rtt_ms / 2 + jitter) / 1000.0

    def drop_connections(self) -> None:
        """Reset every open connection now: both sides see a TCP RST, as when a link dies."""
        self._in_loop(self._reset_all)

    def set_refusing(self, refusing: bool) -> None:
        """While on, new connections are accepted and reset at once, like a dead cloud; switching
        it on also resets the open ones."""

        def apply() -> None:
            self._refusing = refusing
            if refusing:
                self._reset_all()

        self._in_loop(apply)

    def _still_refusing(self) -> bool:
        """Read afresh after an ``await`` (a plain attribute read there looks settled to mypy)."""
        return self._refusing

    def set_http_error(self, status: int | None) -> None:
        """While set, every new connection gets an HTTP ``status`` answer (like a gateway in
        front of a failing cloud) and is closed; switching it on resets the open connections so
        kept-alive clients meet it on their next request. ``None`` restores the relay."""
        if status is not None and not 400 <= status <= 599:
            raise InvalidArgument(f"http error status must be 400..599, got {status}")

        def apply() -> None:
            self._http_error = status
            if status is not None:
                self._reset_all()

        self._in_loop(apply)

    # The event loop side. Buckets, connections and handlers are only touched from the loop.

    def _in_loop(self, fn: Callable[[], None]) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            fn()
            return
        with self._lock:
            if self._state != "running":
                fn()
                return
            assert self._loop is not None
            done: concurrent.futures.Future[None] = concurrent.futures.Future()

            def run() -> None:
                try:
                    fn()
                except BaseException as exc:
                    done.set_exception(exc)
                else:
                    done.set_result(None)

            self._loop.call_soon_threadsafe(run)
            done.result()
            # What ``fn`` set in motion with call_soon (a reset connection's socket is closed
            # that way) runs before this no-op: when the caller goes on, a reset connection is
            # closed, not about to be, so a kept-alive client cannot send on it meanwhile.
            settled: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._loop.call_soon_threadsafe(settled.set_result, None)
            settled.result()

    def _set_bucket_rate(self, bucket: TokenBucket | None, rate_kbps: float | None) -> None:
        if bucket is not None and self._loop is not None:
            bucket.set_rate(_bytes_per_s(rate_kbps), self._loop.time())

    def _reset_all(self) -> None:
        if self._connections:
            log.debug("resetting %d connection(s)", len(self._connections))
        for connection in list(self._connections):
            connection.reset()

    def _run(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._listen())
            except Exception as exc:
                ready.set_exception(exc)
                return
            ready.set_result(None)
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> None:
        now = asyncio.get_running_loop().time()
        self._up = TokenBucket(_bytes_per_s(self._rate_kbps), self.burst_bytes, now)
        self._down = TokenBucket(_bytes_per_s(self._downlink_kbps), self.burst_bytes, now)
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.port,
                                                  limit=self.chunk_bytes)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        self._reset_all()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self._refusing:
                log.debug("refusing a connection")
                _reset(client_writer)
                return
            if self._http_error is not None:
                await _answer_http_error(client_reader, client_writer, self._http_error)
                return
            try:
                target_reader, target_writer = await asyncio.open_connection(
                    self.target_host, self.target_port, limit=self.chunk_bytes)
            except OSError as exc:
                log.debug("target %s:%d unreachable (%s): resetting the client", self.target_host,
                          self.target_port, exc)
                _reset(client_writer)
                return
            connection = _Connection(client_writer, target_writer)
            if self._still_refusing():  # it may have been switched on while this one connected
                connection.reset()
                return
            self._connections.add(connection)
            try:
                await self._relay(client_reader, target_reader, connection)
            finally:
                self._connections.discard(connection)
        except asyncio.CancelledError:
            # Only stop() cancels a handler. Ending quietly matters: Python 3.11's stream server
            # logs an error for a handler task that ends cancelled.
            _reset(client_writer)
        except BaseException:
            _reset(client_writer)
            raise
        finally:
            self._handlers.discard(task)

    async def _relay(self, client_reader: asyncio.StreamReader,
                     target_reader: asyncio.StreamReader, connection: _Connection) -> None:
        assert self._up is not None and self._down is not None
        up, down = _DelayLine(_MAX_DELAYED_BYTES), _DelayLine(_MAX_DELAYED_BYTES)
        tasks = [
            asyncio.create_task(self._pump(client_reader, self._up, up)),
            asyncio.create_task(self._deliver(up, connection.target, upward=True)),
            asyncio.create_task(self._pump(target_reader, self._down, down)),
            asyncio.create_task(self._deliver(down, connection.client, upward=False)),
        ]
        clean = False
        try:
            await asyncio.gather(*tasks)
            clean = True
        except OSError as exc:
            log.debug("connection broken (%s): resetting both sides", exc)
        except Exception:
            log.exception("link relay failed: resetting both sides")
        finally:
            for task in tasks:
                task.cancel()
            if clean:
                await connection.close()
            else:
                connection.reset()

    async def _pump(self, reader: asyncio.StreamReader, bucket: TokenBucket,
                    line: _DelayLine) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await reader.read(_read_size(bucket.rate_bytes_per_s, self.chunk_bytes))
            if data:
                wait_s = bucket.reserve(len(data), loop.time())
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
            # b"" is the end of the stream: it travels the delay line like data, after it.
            await line.put(loop.time() + self._one_way_s(), data)
            if not data:
                return

    async def _deliver(self, line: _DelayLine, writer: asyncio.StreamWriter,
                       upward: bool) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await line.get()
            delay_s = due - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            if upward:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            await writer.drain()


class _Connection:
    """The two ends of one relayed connection."""

    def __init__(self, client: asyncio.StreamWriter, target: asyncio.StreamWriter) -> None:
        self.client = client
        self.target = target

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.target)

    async def close(self) -> None:
        for writer in (self.client, self.target):
            writer.close()
        for writer in (self.client, self.target):
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _DelayLine:
    """Chunks in flight with the time each is due, released strictly in order."""

    def __init__(self, limit_bytes: int) -> None:
        self._items: deque[tuple[float, bytes]] = deque()
        self._bytes = 0
        self._limit_bytes = limit_bytes
        self._changed = asyncio.Condition()

    async def put(self, due: float, data: bytes) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._bytes < self._limit_bytes)
            self._items.append((due, data))
            self._bytes += len(data)
            self._changed.notify_all()

    async def get(self) -> tuple[float, bytes]:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            due, data = self._items.popleft()
            self._bytes -= len(data)
            self._changed.notify_all()
            return due, data


async def _answer_http_error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             status: int) -> None:
    """Read one request (head and body), answer ``status`` with a JSON error body, and close.

    The body is read first: closing a socket with unread bytes sends an RST, which can reach the
    client before the answer does, so the client saw a reset instead of the status on a busy
    machine."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await asyncio.wait_for(reader.readexactly(length), timeout=60)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError,
            ValueError):
        _reset(writer)
        return
    body = b'{"error": "injected by the link emulator"}'
    writer.write(b"HTTP/1.1 %d Injected\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(body),
                                                                              body))
    try:
        await writer.drain()
    finally:
        writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    # abort() alone sends a FIN when nothing is left unread; a zero linger makes it an RST.
    sock = writer.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _read_size(rate_bytes_per_s: float | None, chunk_bytes: int) -> int:
    if rate_bytes_per_s is None:
        return chunk_bytes
    return min(chunk_bytes, max(_MIN_READ_BYTES, int(rate_bytes_per_s * _QUANTUM_S)))


def _bytes_per_s(rate_kbps: float | None) -> float | None:
    return None if rate_kbps is None else rate_kbps * _BYTES_PER_KBIT


def _check_rate(rate: float | None, name: str, unit: str) -> None:
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise InvalidArgument(
            f"{name} must be a positive number of {unit}, or None for unlimited (got {rate!r})")


def _check_rtt(rtt_ms: float) -> None:
    if not (math.isfinite(rtt_ms) and rtt_ms >= 0):
        raise InvalidArgument(f"rtt_ms must be 0 or a positive number of ms (got {rtt_ms!r})")


def _check_port(port: int, name: str, lowest: int) -> None:
    if not lowest <= port <= 65535:
        raise InvalidArgument(f"{name} must be a TCP port from {lowest} to 65535 (got {port!r})")
