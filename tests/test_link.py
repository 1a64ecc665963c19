from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from edgesplit.errors import InvalidArgument
from edgesplit.testbed.link import LinkEmulator, TokenBucket

BURST_BYTES = 16384  # the emulator's default burst: it passes at once
CHUNK_BYTES = 16384  # the emulator's default read size: one may be in flight at a rate change


def at_least_s(nbytes: int, bytes_per_s: float) -> float:
    """The shortest time ``nbytes`` can take through a link of that rate (the burst is free)."""
    return (nbytes - BURST_BYTES) / bytes_per_s


# --- TokenBucket: a fake clock, no sleeping -------------------------------------------------


@pytest.mark.fast
def test_burst_passes_at_once_then_the_rate_sets_the_wait() -> None:
    bucket = TokenBucket(1000.0, burst_bytes=500, now=10.0)
    assert bucket.reserve(300, now=10.0) == 0.0
    assert bucket.reserve(200, now=10.0) == 0.0
    assert bucket.reserve(1000, now=10.0) == pytest.approx(1.0)
    # The next caller also waits for the debt of the previous one: one link, shared.
    assert bucket.reserve(500, now=10.0) == pytest.approx(1.5)
    assert bucket.reserve(0, now=11.0) == pytest.approx(0.5)
    assert bucket.reserve(0, now=11.5) == 0.0


@pytest.mark.fast
def test_idle_time_refills_up_to_the_burst_only() -> None:
    bucket = TokenBucket(1000.0, burst_bytes=500, now=0.0)
    assert bucket.reserve(500, now=0.0) == 0.0
    assert bucket.reserve(250, now=0.25) == 0.0
    assert bucket.reserve(500, now=100.0) == 0.0
    assert bucket.reserve(1000, now=100.0) == pytest.approx(1.0)


@pytest.mark.fast
def test_without_burst_every_chunk_waits_its_serialization_time() -> None:
    bucket = TokenBucket(2000.0, burst_bytes=0, now=0.0)
    assert bucket.reserve(1000, now=0.0) == pytest.approx(0.5)
    assert bucket.reserve(1000, now=0.5) == pytest.approx(0.5)
    assert bucket.reserve(1000, now=5.0) == pytest.approx(0.5)


@pytest.mark.fast
def test_a_rate_change_applies_from_its_time_and_debt_is_paid_at_the_new_rate() -> None:
    bucket = TokenBucket(1000.0, burst_bytes=0, now=0.0)
    assert bucket.reserve(2000, now=0.0) == pytest.approx(2.0)
    bucket.set_rate(4000.0, now=1.0)  # 1000 bytes paid at the old rate, 1000 left
    assert bucket.reserve(0, now=1.0) == pytest.approx(0.25)
    assert bucket.reserve(4000, now=1.25) == pytest.approx(1.0)
    bucket.set_rate(500.0, now=2.25)
    assert bucket.rate_bytes_per_s == 500.0
    assert bucket.reserve(500, now=2.25) == pytest.approx(1.0)


@pytest.mark.fast
def test_unlimited_never_waits_and_forgives_debt() -> None:
    bucket = TokenBucket(None, burst_bytes=100, now=0.0)
    assert bucket.reserve(10**9, now=0.0) == 0.0
    bucket.set_rate(100.0, now=0.0)
    assert bucket.reserve(100, now=0.0) == 0.0
    assert bucket.reserve(100, now=0.0) == pytest.approx(1.0)
    bucket.set_rate(None, now=0.0)
    assert bucket.reserve(10**6, now=0.0) == 0.0
    bucket.set_rate(100.0, now=0.0)
    assert bucket.reserve(100, now=0.0) == 0.0


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan"), float("inf")])
@pytest.mark.fast
def test_bucket_refuses_a_rate_that_is_not_positive(rate: float) -> None:
    with pytest.raises(InvalidArgument, match="rate_bytes_per_s"):
        TokenBucket(rate, burst_bytes=0, now=0.0)
    with pytest.raises(InvalidArgument, match="rate_bytes_per_s"):
        TokenBucket(1.0, burst_bytes=0, now=0.0).set_rate(rate, now=0.0)


@pytest.mark.fast
def test_bucket_refuses_negative_burst_and_size() -> None:
    with pytest.raises(InvalidArgument, match="burst_bytes"):
        TokenBucket(1.0, burst_bytes=-1, now=0.0)
    with pytest.raises(InvalidArgument, match="negative"):
        TokenBucket(1.0, burst_bytes=0, now=0.0).reserve(-1, now=0.0)


# --- LinkEmulator arguments -------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, word", [
    ({"rate_kbps": 0}, "rate_kbps"),
    ({"rate_kbps": -5}, "rate_kbps"),
    ({"downlink_kbps": 0}, "downlink_kbps"),
    ({"rtt_ms": -1}, "rtt_ms"),
    ({"rtt_ms": float("nan")}, "rtt_ms"),
    ({"burst_bytes": -1}, "burst_bytes"),
    ({"chunk_bytes": 0}, "chunk_bytes"),
    ({"listen_port": 70000}, "listen_port"),
])
@pytest.mark.fast
def test_emulator_refuses_bad_arguments(kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(InvalidArgument, match=word):
        LinkEmulator("127.0.0.1", 80, **kwargs)  # type: ignore[arg-type]


@pytest.mark.fast
def test_setters_check_and_work_before_start() -> None:
    link = LinkEmulator("127.0.0.1", 80, rate_kbps=100, rtt_ms=10)
    assert (link.rate_kbps, link.downlink_kbps, link.rtt_ms) == (100, None, 10.0)
    link.set_rate_kbps(None)
    link.set_downlink_kbps(50)
    link.set_rtt_ms(0)
    assert (link.rate_kbps, link.downlink_kbps, link.rtt_ms) == (None, 50, 0.0)
    for setter, value in [(link.set_rate_kbps, 0), (link.set_downlink_kbps, -1),
                          (link.set_rtt_ms, -3)]:
        with pytest.raises(InvalidArgument):
            setter(value)
    link.drop_connections()
    link.stop()  # never started: nothing to do


# --- Real sockets: a tiny threaded server behind the emulator ---------------------------------
# Timing through real sockets is checked from below only: the emulator must never be faster
# than it is told (a busy machine can only make it slower, so these cannot fail for that). How
# fast it is exactly is the TokenBucket's arithmetic, tested above on a fake clock.


class _Server:
    """A loopback TCP server running ``serve(conn)`` in a thread per connection."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self._serve = serve
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="test-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self._serve(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def _echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def _sink(conn: socket.socket) -> None:
    total = 0
    while data := conn.recv(65536):
        total += len(data)
    conn.sendall(str(total).encode())


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = _Server(_echo)
    yield server.port
    server.close()


@pytest.fixture
def sink_port() -> Iterator[int]:
    server = _Server(_sink)
    yield server.port
    server.close()


def _connect(link: LinkEmulator) -> socket.socket:
    return socket.create_connection(("127.0.0.1", link.port), timeout=10)


def _recv_all(sock: socket.socket) -> bytes:
    parts = []
    while data := sock.recv(65536):
        parts.append(data)
    return b"".join(parts)


def _ping(sock: socket.socket, message: bytes = b"ping") -> bytes:
    sock.sendall(message)
    received = b""
    while len(received) < len(message):
        data = sock.recv(len(message) - len(received))
        assert data, "connection closed during a ping"
        received += data
    return received


def _assert_closed_soon(sock: socket.socket, within_s: float = 30.0) -> None:
    """The peer closed or reset the connection: a read ends it instead of hanging (a socket
    timeout past the generous bound fails the test)."""
    sock.settimeout(within_s)
    try:
        sock.sendall(b"anyone there?")
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass


def _assert_refused_soon(link: LinkEmulator) -> None:
    """A new connection fails: reset while connecting, or closed right after."""
    try:
        sock = _connect(link)
    except ConnectionError:
        return
    with sock:
        _assert_closed_soon(sock)


def _send_in_thread(sock: socket.socket, payload: bytes) -> threading.Thread:
    def send() -> None:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kwargs", [{}, {"rtt_ms": 10, "chunk_bytes": 4096, "burst_bytes": 0}])
def test_bytes_arrive_intact_both_ways(echo_port: int, kwargs: dict[str, float]) -> None:
    payload = os.urandom(3_000_000)
    with LinkEmulator("127.0.0.1", echo_port, **kwargs) as link, _connect(link) as sock:  # type: ignore[arg-type]
        sender = _send_in_thread(sock, payload)
        echoed = _recv_all(sock)
        sender.join()
    assert echoed == payload
    assert link.bytes_up == link.bytes_down == len(payload)


def test_uplink_rate_sets_the_transfer_time(sink_port: int) -> None:
    # 1,000,000 bytes at 4000 kbit/s (500,000 bytes/s) is 2 s of serialization.
    with LinkEmulator("127.0.0.1", sink_port, rate_kbps=4000) as link, _connect(link) as sock:
        start = time.perf_counter()
        sock.sendall(bytes(1_000_000))
        sock.shutdown(socket.SHUT_WR)
        reply = _recv_all(sock)
        elapsed = time.perf_counter() - start
    assert reply == b"1000000"
    assert elapsed >= at_least_s(1_000_000, 500_000)


def test_connections_share_the_link(sink_port: int) -> None:
    # Two uploads of 500,000 bytes at once take as long as one of 1,000,000: 2 s, not 1 s.
    with LinkEmulator("127.0.0.1", sink_port, rate_kbps=4000) as link, \
            _connect(link) as first, _connect(link) as second:
        start = time.perf_counter()
        senders = [_send_in_thread(sock, bytes(500_000)) for sock in (first, second)]
        replies = [_recv_all(sock) for sock in (first, second)]
        elapsed = time.perf_counter() - start
        for sender in senders:
            sender.join()
    assert replies == [b"500000", b"500000"]
    # One link: the two uploads did not get 4000 kbit/s each.
    assert elapsed >= at_least_s(1_000_000, 500_000)


def test_downlink_rate_is_separate_from_the_uplink(echo_port: int) -> None:
    with LinkEmulator("127.0.0.1", echo_port, downlink_kbps=4000) as link, \
            _connect(link) as sock:
        start = time.perf_counter()
        sender = _send_in_thread(sock, bytes(1_000_000))
        echoed = _recv_all(sock)
        elapsed = time.perf_counter() - start
        sender.join()
    assert len(echoed) == 1_000_000
    assert elapsed >= at_least_s(1_000_000, 500_000)


def test_rtt_delays_a_round_trip(echo_port: int) -> None:
    with LinkEmulator("127.0.0.1", echo_port, rtt_ms=100) as link, _connect(link) as sock:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            assert _ping(sock) == b"ping"
            times.append(time.perf_counter() - start)
        link.set_rtt_ms(20)
        start = time.perf_counter()
        _ping(sock)
        short = time.perf_counter() - start
    # 1 ms of slack for clock rounding.
    assert all(t >= 0.099 for t in times), times
    assert short >= 0.019 and link.rtt_ms == 20


def test_rate_change_during_a_transfer_changes_its_speed(sink_port: int) -> None:
    # 1,500,000 bytes: 300,000 at 1000 kbit/s (125,000 bytes/s), then the rest at 8000.
    with LinkEmulator("127.0.0.1", sink_port, rate_kbps=1000) as link, _connect(link) as sock:
        start = time.perf_counter()
        sender = _send_in_thread(sock, bytes(1_500_000))
        while link.bytes_up < 300_000:  # an event: this many bytes through, however long
            time.sleep(0.01)
        slow_s = time.perf_counter() - start
        link.set_rate_kbps(8000)
        changed, switched_at = time.perf_counter(), link.bytes_up
        sender.join()
        assert _recv_all(sock) == b"1500000"
        fast_s = time.perf_counter() - changed
    assert slow_s >= at_least_s(300_000, 125_000)
    # What was left went at 8000 kbit/s or slower, never faster. (That it goes at 8000 and not
    # at 1000 is the bucket's arithmetic: test_a_rate_change_applies_from_its_time...)
    assert fast_s >= at_least_s(1_500_000 - switched_at - CHUNK_BYTES, 1_000_000)
    assert link.rate_kbps == 8000


def test_drop_connections_resets_open_connections_only(echo_port: int) -> None:
    with LinkEmulator("127.0.0.1", echo_port) as link:
        with _connect(link) as sock:
            _ping(sock)
            link.drop_connections()
            _assert_closed_soon(sock)
        with _connect(link) as sock:
            assert _ping(sock) == b"ping"


def test_refusing_plays_a_dead_cloud_until_switched_off(echo_port: int) -> None:
    with LinkEmulator("127.0.0.1", echo_port) as link:
        with _connect(link) as open_before:
            _ping(open_before)
            link.set_refusing(True)
            _assert_closed_soon(open_before)
        _assert_refused_soon(link)
        link.set_refusing(False)
        with _connect(link) as sock:
            assert _ping(sock) == b"ping"


def test_a_dead_target_closes_the_client_quickly() -> None:
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with LinkEmulator("127.0.0.1", dead_port) as link:
        _assert_refused_soon(link)


def test_stop_ends_the_thread_and_open_connections(echo_port: int,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    before = set(threading.enumerate())
    link = LinkEmulator("127.0.0.1", echo_port, rtt_ms=10).start()
    assert any(t.name == "link-emulator" for t in threading.enumerate())
    with _connect(link) as sock:
        _ping(sock)
        link.stop()
        _assert_closed_soon(sock)
    link.stop()
    assert not any(t.name == "link-emulator" for t in set(threading.enumerate()) - before)
    with pytest.raises(InvalidArgument, match="already started"):
        link.start()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_busy_listen_port_is_reported(echo_port: int) -> None:
    with pytest.raises(InvalidArgument, match="listen_port=0"):
        LinkEmulator("127.0.0.1", echo_port, listen_port=echo_port).start()


@pytest.mark.fast
def test_jitter_spreads_each_way_delay_around_half_the_rtt_seeded() -> None:
    def delays(seed: int, jitter_ms: float = 40.0) -> list[float]:
        link = LinkEmulator("127.0.0.1", 9, rtt_ms=100, jitter_ms=jitter_ms, seed=seed)
        return [link._one_way_s() for _ in range(500)]

    drawn = delays(1)
    assert drawn == delays(1) and drawn != delays(2)  # seeded: a run can be repeated
    assert 0.030 <= min(drawn) < 0.032 and 0.068 < max(drawn) <= 0.070  # 50 ms +- 20 ms
    assert abs(sum(drawn) / len(drawn) - 0.050) < 0.002
    assert set(delays(1, jitter_ms=0)) == {0.050}
