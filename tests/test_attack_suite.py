"""The attack suite of issue 19, run against a real server process per backend.

Every test takes ``backend`` (a name in ``SERVERS``) or the module's server ``attacked`` started
by it, so the same attacks run against every backend listed: to run them against another one,
add its name and a starter to ``SERVERS`` (``CloudProcess`` with ``--backend ray``, say); the
starter takes extra ``edgesplit cloud serve`` arguments and returns a server not yet started.
Each attack runs in bounded loops on loopback and is judged by what the server answers and what
it holds (descriptors and memory, read from /proc).
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import torch

from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.testbed.processes import CloudProcess
from edgesplit.wire.codecs import encode_tensor
from edgesplit.wire.protocol import HEADER_LENGTH, encode_request, parse_response

from .conftest import ray_installed
from .test_attacks import memory_kb, read_answer

SplitFactory = Callable[[str], SplitModel]
HEAD_TIMEOUT_S = 2
MAX_CONNECTIONS = 64
# What every server of the suite runs with: limits small enough to reach in a test.
ATTACK_ARGS = ("--head-timeout-s", str(HEAD_TIMEOUT_S), "--max-connections",
               str(MAX_CONNECTIONS), "--max-heads-mb", "1")
SERVERS: dict[str, Callable[..., CloudProcess]] = {
    "builtin": lambda *args: CloudProcess(*args, models="mnist_cnn,alexnet"),
}
if ray_installed():
    SERVERS["ray"] = lambda *args: CloudProcess("--backend", "ray", *args,
                                                models="mnist_cnn,alexnet")
READY_TIMEOUT_S = 300  # Ray takes ~30 s to start on two busy cores
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module", params=list(SERVERS))
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def attacked(backend: str) -> Iterator[CloudProcess]:
    """One server per backend for the attacks that leave it as they found it."""
    server = SERVERS[backend](*ATTACK_ARGS)
    server.start(ready_timeout_s=READY_TIMEOUT_S)
    try:
        yield server
    finally:
        server.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def closed_by_server(sock: socket.socket) -> bytes:
    """What the server sends before it closes ``sock``, with b"open" after it when the server
    has not closed it within 30 s (a bound, not a timing)."""
    answer = b""
    sock.settimeout(30)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return answer
        except TimeoutError:
            return answer + b"open"
        if not chunk:
            return answer
        answer += chunk


def descriptors(server: CloudProcess) -> int:
    return len(os.listdir(f"/proc/{server.pid()}/fd"))


def descriptor_limit(server: CloudProcess) -> int:
    """The server's own soft limit on open files (Ray raises its driver's to the hard limit)."""
    with open(f"/proc/{server.pid()}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    return int(line.split()[3])


def healthy(server: CloudProcess) -> bool:
    return httpx.get(f"{server.url}/v2/health/live", timeout=10).json() == {"live": True}


# Item 1: heads that never finish, and connections without end.

HEADS_THAT_NEVER_FINISH = {
    "nothing": b"",
    "part of the request line": b"GET /v2/hea",
    "a request line": b"GET /v2/health/live HTTP/1.1\r\n",
    "headers without the blank line": b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-A: b\r\n",
    "after a whole request": LIVE + b"GET /v2/health/live HTTP/1.1\r\nHo",
    "a POST's head": b"POST /v2/models/mnist_cnn/infer HTTP/1.1\r\nContent-Length: 10\r\n",
}


@pytest.mark.parametrize("sent", HEADS_THAT_NEVER_FINISH.values(), ids=HEADS_THAT_NEVER_FINISH)
def test_a_head_that_never_finishes_is_closed(attacked: CloudProcess, sent: bytes) -> None:
    socks = [connect(attacked.port) for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(sent)
        answers = [closed_by_server(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    for answer in answers:  # closed, with a 408 (the built-in server says why)
        assert not answer.endswith(b"open"), answer[-200:]
        assert answer == b"" or answer.endswith(b"did not arrive within 2 s\"}"), answer
    assert healthy(attacked)


def test_a_head_trickled_byte_by_byte_is_closed_at_its_deadline(attacked: CloudProcess) -> None:
    """One byte every 100 ms never stalls, yet the whole head must arrive within the timeout."""
    head = b"GET /v2/health/live HTTP/1.1\r\nX-Slow: " + b"a" * 600
    with connect(attacked.port) as sock:
        sent = 0
        try:
            for byte in head:  # 60 s at most: the loop's bound, far past the deadline
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = closed_by_server(sock)
    assert sent < len(head) and not answer.endswith(b"open"), (sent, answer)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer


def hold(port: int, count: int, sent: bytes = b"") -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(sent)
        socks.append(sock)
    return socks


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nX: "], ids=["silent", "half a head"])
def test_held_connections_stay_below_the_cap_and_probes_are_served(attacked: CloudProcess,
                                                                   sent: bytes) -> None:
    """Five times the cap of idle connections: the server closes the oldest idle ones, so its
    descriptors stay bounded and every probe and inference is answered meanwhile."""
    before = descriptors(attacked)
    socks = hold(attacked.port, 5 * MAX_CONNECTIONS, sent)
    try:
        for _ in range(10):
            assert healthy(attacked)
        held = descriptors(attacked) - before
        answer = httpx.post(f"{attacked.url}/v2/models/mnist_cnn/infer",
                            json=mnist_json(0.5), timeout=30)
        assert answer.status_code == 200, answer.text
    finally:
        for sock in socks:
            sock.close()
    assert held <= MAX_CONNECTIONS + 16, held  # the cap, and a burst being closed


def test_the_default_cap_follows_the_descriptor_limit(backend: str) -> None:
    """A server started with the common 1,024 descriptors, against 1,100 idle connections:
    probes are served all along and it never reaches its limit (on Ray the driver raises its
    own soft limit to the hard one, and the default cap follows it)."""
    server = SERVERS[backend]()  # no cap given: the default
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        server.launch()  # the child inherits the lower limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        server.wait_ready(READY_TIMEOUT_S)
        socks = hold(server.port, 1100)
        try:
            served = sum(healthy(server) for _ in range(10))
            most, limit = descriptors(server), descriptor_limit(server)
        finally:
            for sock in socks:
                sock.close()
    finally:
        server.stop()
    assert served == 10 and most < limit <= max(1024, hard), (most, limit)


# Item 2: heads of many tiny lines, and all unfinished heads together.

@pytest.mark.parametrize("line", [b"aa:b\r\n", b"a:\r\n", b"X-%d: 1\r\n"], ids=repr)
def test_heads_of_many_lines_are_refused(attacked: CloudProcess, line: bytes) -> None:
    lines = b"".join(line.replace(b"%d", str(i).encode()) for i in range(9000))
    for end in (b"", b"\r\n"):  # unfinished (the case) and whole
        with connect(attacked.port) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n" + lines + end)
            answer = closed_by_server(sock)
        assert answer.startswith(b"HTTP/1.1 431") and b"header lines" in answer, answer[:300]
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(99))
    with connect(attacked.port) as sock:  # Host and 99 more: at the limit, served
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 200")


def test_unfinished_heads_share_one_budget(attacked: CloudProcess) -> None:
    """Forty connections each hold 60 KB of an unfinished head, 2.3 MB against the suite's
    1 MiB budget: the heads past it get 503 and are closed, memory stays bounded, and a whole
    request (its head in one piece) is still served meanwhile."""
    before = memory_kb(attacked)
    socks = hold(attacked.port, 40, b"GET /v2/health/live HTTP/1.1\r\nX-Big: " + b"a" * 60_000)
    try:
        assert healthy(attacked)
        grew_mb = (memory_kb(attacked) - before) / 1024
        answers = [closed_by_server(sock) if i % 4 == 0 else b"" for i, sock in enumerate(socks)]
    finally:
        for sock in socks:
            sock.close()
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    assert refused and all(b"unfinished request heads" in a for a in refused), answers[:3]
    assert grew_mb < 32, grew_mb


# Item 7: pipelining is not a long head.

@pytest.mark.parametrize("piece", [None, 1000, 65537, 7], ids=["whole", "1000 B", "64 KiB+1",
                                                                "7 B"])
def test_pipelined_requests_are_answered(attacked: CloudProcess, piece: int | None) -> None:
    count = 6000 if piece is None else 2000 if piece > 100 else 300
    stream = LIVE * count
    with connect(attacked.port) as sock:
        if piece is None:
            sock.sendall(stream)
        else:  # chunks that end inside heads
            for start in range(0, len(stream), piece):
                sock.sendall(stream[start:start + piece])
        answers = b""
        while answers.count(b"HTTP/1.1 ") < count:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            answers += chunk
    assert answers.count(b"HTTP/1.1 200") == count, answers[-300:]


def test_a_long_head_after_pipelined_ones_is_still_refused(attacked: CloudProcess) -> None:
    with connect(attacked.port) as sock:
        sock.sendall(LIVE * 100 + b"GET /v2/health/live HTTP/1.1\r\nX-Big: ")
        try:
            for _ in range(40):  # 2.6 MB at most
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answers = closed_by_server(sock)
    assert answers.count(b"HTTP/1.1 200") == 100 and b"HTTP/1.1 431" in answers


# Item 6: /offload is a JSON request.

def offload_head(length: int | None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /offload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{size}"
            "\r\n\r\n").encode()


def upload(port: int, head: bytes, size: int, chunked: bool = False) -> bytes:
    """Send ``head`` and up to ``size`` bytes of a base64 body; the server's answer."""
    with connect(port) as sock:
        sock.sendall(head + (b"" if chunked else b'{"tensor": "'))
        piece = b"A" * 65536
        try:
            for _ in range(size // len(piece)):
                sock.sendall(b"10000\r\n" + piece + b"\r\n" if chunked else piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return closed_by_server(sock)


def test_offload_bodies_are_held_to_the_json_limit(attacked: CloudProcess) -> None:
    """Four 60 MiB base64 bodies at once, declared and chunked: 413 before or while they
    stream, and the server's peak memory grows by a few MiB, not by their size."""
    size = 60 * 1024 * 1024
    peak = memory_kb(attacked, "VmHWM")
    answers: list[bytes] = []
    threads = [threading.Thread(target=lambda chunked=chunked: answers.append(upload(
        attacked.port, offload_head(None if chunked else size + 20), size, chunked)))
        for chunked in (False, False, True, True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grew_mb = (memory_kb(attacked, "VmHWM") - peak) / 1024
    assert len(answers) == 4
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 413") and b"JSON request" in answer, answer[:300]
    assert grew_mb < 64, grew_mb
    under = b'{"tensor": "' + b"A" * (3 * 1024 * 1024) + b'", "splitting_point": 0, ' \
        b'"model": "mnist_cnn"}'
    read = httpx.post(f"{attacked.url}/offload", content=under, timeout=60)
    assert read.status_code == 400 and "bytes" in read.json()["error"]  # read, not a 413


# Item 9: finite inputs whose outputs are not.

MNIST_CUTS = {0: [1, 1, 28, 28], 2: [1, 10, 12, 12], 5: [1, 20, 4, 4], 8: [1, 10]}


def mnist_json(value: float, split_point: int = 0) -> dict[str, object]:
    shape = MNIST_CUTS[split_point]
    return {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32",
                        "data": [value] * math.prod(shape)}],
            "parameters": {"split_point": split_point}}


def mnist_binary(value: float, split_point: int) -> tuple[bytes, dict[str, str]]:
    tensor = torch.full(MNIST_CUTS[split_point], value)
    return encode_request([encode_tensor(tensor, name="x")], {"split_point": split_point})


@pytest.mark.parametrize(("value", "split_point"), [
    (3e38, 0), (-3e38, 0), (1e38, 0), (float("inf"), 5), (float("inf"), 8), (-3e38, 5)])
def test_outputs_that_overflow_are_a_422(attacked: CloudProcess, value: float,
                                         split_point: int) -> None:
    url = f"{attacked.url}/v2/models/mnist_cnn/infer"
    content, headers = mnist_binary(value, split_point)
    answers = [httpx.post(url, content=content, headers=headers, timeout=30)]
    if math.isfinite(value):  # JSON has no infinity
        answers.append(httpx.post(url, json=mnist_json(value, split_point), timeout=30))
    if split_point == 0:
        raw = torch.full((1, 1, 28, 28), value).numpy().astype("<f4").tobytes()
        answers.append(httpx.post(f"{attacked.url}/offload", timeout=30, json={
            "tensor": base64.b64encode(raw).decode(), "splitting_point": 0,
            "model": "mnist_cnn"}))
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert "the input's values overflow the model" in answer.json()["error"]


@pytest.mark.parametrize("split_point", [2, 8])
def test_infinity_at_a_cut_is_fine_when_the_output_is_finite(attacked: CloudProcess,
                                                              split_point: int) -> None:
    """-inf before a ReLU (split 2) or a softmax (split 8, all but one masked) is a
    legitimate activation: the answer is finite and served; NaN is still refused."""
    url = f"{attacked.url}/v2/models/mnist_cnn/infer"
    masked = torch.full(MNIST_CUTS[split_point], float("-inf"))
    masked.view(-1)[0] = 1.0  # masked but for one: a softmax of it is finite
    content, headers = encode_request([encode_tensor(masked, name="x")],
                                      {"split_point": split_point})
    answer = httpx.post(url, content=content, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    _, outputs = parse_response(answer.content, answer.headers.get(HEADER_LENGTH))
    assert bool(torch.isfinite(outputs[0]).all())
    content, headers = mnist_binary(float("nan"), split_point)
    answer = httpx.post(url, content=content, headers=headers, timeout=30)
    assert answer.status_code == 400 and "contains NaN" in answer.json()["error"]


# Item 5: one key's full batches never starve another's request.

def alexnet_batch(split: SplitModel) -> tuple[bytes, dict[str, str]]:
    x = zoo.sample_input("alexnet").repeat(8, 1, 1, 1)
    return encode_request([encode_tensor(split.head(x, 14)[0], name="x")], {"split_point": 14})


async def starve(url: str, full: tuple[bytes, dict[str, str]], lone: tuple[bytes, dict[str, str]],
                 rounds: int) -> list[int]:
    """Six clients send full AlexNet batches in a closed loop; meanwhile one MNIST request at
    a time: for each, how many AlexNet answers arrived while it waited."""
    answered = 0
    stop = asyncio.Event()

    async def flood(client: httpx.AsyncClient) -> None:
        nonlocal answered
        while not stop.is_set():
            response = await client.post("/v2/models/alexnet/infer", content=full[0],
                                         headers=full[1])
            assert response.status_code == 200, response.text
            answered += 1

    overtaken = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        floods = [asyncio.create_task(flood(client)) for _ in range(6)]
        await asyncio.sleep(1)  # the flood is running
        for _ in range(rounds):
            seen = answered
            response = await client.post("/v2/models/mnist_cnn/infer", content=lone[0],
                                         headers=lone[1])
            assert response.status_code == 200, response.text
            overtaken.append(answered - seen)
        stop.set()
        await asyncio.gather(*floods)
    return overtaken


def test_full_batches_do_not_starve_a_lone_request(backend: str,
                                                   split_model: SplitFactory) -> None:
    server = SERVERS[backend]("--workers", "1")
    server.start(ready_timeout_s=READY_TIMEOUT_S)
    try:
        overtaken = asyncio.run(starve(server.url, alexnet_batch(split_model("alexnet")),
                                       mnist_binary(0.5, 5), rounds=5))
    finally:
        server.stop()
    # At most the six batches queued before it (and one just answered) run first; before the
    # fix the full batches always went first and the MNIST request waited for hundreds.
    assert max(overtaken) <= 8, overtaken
