"""Attacks on a real cloud process over loopback: each in a bounded loop, each checked by what
the server answers and by what it holds (its resident memory, read from /proc)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch

from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.edge.client import CloudClient
from edgesplit.testbed.processes import CloudProcess
from edgesplit.wire.auth import DIGEST_HEADER, sign_request
from edgesplit.wire.codecs import encode_tensor, parse_codec
from edgesplit.wire.protocol import HEADER_LENGTH, encode_request

from .helpers import mnist_request

SplitFactory = Callable[[str], SplitModel]
KEYS = {"edge-1": b"first-edge-secret"}
GIANT_SHAPES = [[2**64, 0], [0, 2**64], [2**63 - 1, 0], [0, 2**40, 2**40], [0, 2**63, 1],
                [2**31, 0, 2**31], [10**30, 0]]


def memory_kb(process: CloudProcess, field: str = "VmRSS") -> int:
    """The server's resident memory (``VmRSS``) or its peak so far (``VmHWM``), in kB."""
    assert process.process is not None
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field)))


def raw_request(port: int, head: bytes, body: bytes = b"", *, half_close: bool = False,
                timeout_s: float = 30.0) -> bytes:
    """Send bytes as they are; the whole answer, until the server closes or 2 s of silence
    after a complete one."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock, timeout_s)


def read_answer(sock: socket.socket, timeout_s: float = 30.0) -> bytes:
    sock.settimeout(timeout_s)
    answer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return answer
        if not chunk:
            return answer
        answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is not None and len(body) >= length:
            return answer


def post_head(path: str, length: int, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {length}",
             *(f"{k}: {v}" for k, v in (extra or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# 1. Zero-sized giant shapes: every decoder refuses them with a 400, never a 500.

@pytest.mark.parametrize("shape", GIANT_SHAPES, ids=str)
def test_zero_sized_giant_shapes_are_a_400_everywhere(cloud: CloudProcess,
                                                      shape: list[int]) -> None:
    url = cloud.url
    as_json = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": []}]}
    head = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32",
                                   "parameters": {"binary_data_size": 0}}]}).encode()
    zstd = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32",
                                   "parameters": {"binary_data_size": 9,
                                                  "compression": "zstd"}}]}).encode()
    answers = [
        httpx.post(f"{url}/v2/models/mnist_cnn/infer", json=as_json),
        httpx.post(f"{url}/v2/models/mnist_cnn/infer", content=head,
                   headers={HEADER_LENGTH: str(len(head))}),
        httpx.post(f"{url}/v2/models/mnist_cnn/infer", content=zstd + b"\x28\xb5\x2f\xfd" * 2
                   + b"\0", headers={HEADER_LENGTH: str(len(zstd))}),
        httpx.post(f"{url}/offload", json={"tensor": "", "splitting_point": 0,
                                           "model": "mnist_cnn", "shape": shape}),
        httpx.post(f"{url}/offload", json={"tensor": "", "splitting_point": 0,
                                           "model": "mnist_cnn", "shape": shape,
                                           "dtype": "int8"}),
    ]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert "dimension" in answer.json()["error"] or "shape" in answer.json()["error"]


# 2. Pre-authentication slot exhaustion and the whole-body deadline.

@pytest.fixture(scope="module")
def signed_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text("".join(f"{k} {v.decode()}\n" for k, v in KEYS.items()))
    with CloudProcess("--hmac-keys", str(keys), "--max-pending", "2",
                      models="mnist_cnn") as server:
        yield server



def test_a_forged_signature_is_refused_before_its_body(signed_cloud: CloudProcess,
                                                        split_model: SplitFactory) -> None:
    """Key id in clear, fresh timestamp and nonce, a garbage signature and a body that never
    comes: 401 at once, holding nothing; signed requests meanwhile get their answers."""
    forged = sign_request("POST", "/v2/models/mnist_cnn/infer", b"x" * 1000, "edge-1",
                          b"a guess", time.time())
    socks = []
    try:
        for _ in range(8):  # four times --max-pending
            sock = socket.create_connection(("127.0.0.1", signed_cloud.port))
            sock.sendall(post_head("/v2/models/mnist_cnn/infer", 1000, forged) + b"x")
            socks.append(sock)
        answers = [read_answer(sock) for sock in socks]
        tensors, expected = mnist_request(split_model("mnist_cnn"))
        with CloudClient(signed_cloud.url, signing=("edge-1", KEYS["edge-1"])) as client:
            for _ in range(4):
                assert torch.allclose(client.infer("mnist_cnn", 5, tensors, 30).output,
                                      expected, atol=1e-6)
    finally:
        for sock in socks:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 401") and b"bad request signature" in a
               for a in answers), answers


def test_a_body_that_lies_about_its_signed_digest_is_refused(signed_cloud: CloudProcess) -> None:
    path = "/v2/models/mnist_cnn/infer"
    headers = sign_request("POST", path, b"{}", "edge-1", KEYS["edge-1"], time.time())
    answer = httpx.post(signed_cloud.url + path, content=b"{ }", headers=headers)
    assert answer.status_code == 401 and "X-Edgesplit-Content-SHA256" in answer.json()["error"]
    unsigned_digest = {k: v for k, v in sign_request("POST", path, b"{}", "edge-1",
                                                     KEYS["edge-1"], time.time()).items()
                       if k != DIGEST_HEADER}
    answer = httpx.post(signed_cloud.url + path, content=b"{}", headers=unsigned_digest)
    assert answer.status_code == 401 and "Content-SHA256" in answer.json()["error"]


def trickle_until_answered(port: int, path: str, head_extra: dict[str, str] | None = None,
                           max_bytes: int = 2000) -> tuple[bytes, int]:
    """Send a 100 kB body one byte per 50 ms until the server answers (at most ``max_bytes``
    bytes, so the loop is bounded); the answer and the bytes sent."""
    return trickle_after(port, post_head(path, 100_000, head_extra), max_bytes)


def trickle_after(port: int, head: bytes, max_bytes: int = 2000) -> tuple[bytes, int]:
    """``trickle_until_answered`` with a head of the caller's (a signed one, say)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        sock.settimeout(0.05)
        for sent in range(1, max_bytes + 1):
            try:
                sock.sendall(b"x")
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return b"", sent
            sock.settimeout(10)
            return answer + read_answer(sock, 10), sent
    return b"", max_bytes


def test_the_body_deadline_is_for_the_whole_body(monkeypatch: pytest.MonkeyPatch,
                                                 split_model: SplitFactory) -> None:
    """One byte every 50 ms never stalls 1 s between chunks, yet falls short of the minimum
    rate: cut off after the 1 s grace. Trickling clients hold no pending slot meanwhile."""
    monkeypatch.setenv("EDGESPLIT_BODY_TIMEOUT_S", "1")
    with CloudProcess("--max-pending", "1", models="mnist_cnn") as server:
        results: list[tuple[bytes, int]] = []
        threads = [threading.Thread(target=lambda: results.append(
            trickle_until_answered(server.port, "/v2/models/mnist_cnn/infer")))
            for _ in range(4)]
        for thread in threads:
            thread.start()
        tensors, expected = mnist_request(split_model("mnist_cnn"))
        with CloudClient(server.url) as client:  # while they trickle: the slot is free
            assert torch.allclose(client.infer("mnist_cnn", 5, tensors, 30).output, expected,
                                  atol=1e-6)
        for thread in threads:
            thread.join()
    for answer, sent in results:  # cut off well before the loop's bound (or, coming while
        # the legitimate request ran, refused at once: a trickle cannot wait for a slot either)
        assert answer.startswith((b"HTTP/1.1 408", b"HTTP/1.1 503")) and sent < 2000, answer
    assert any(b"stalled" in answer for answer, _ in results)


# 3. Memory of bodies in flight, server-wide.

def hold_uploads(port: int, path: str, count: int, size: int,
                 extra: dict[str, str] | None = None) -> list[socket.socket]:
    """``count`` connections, each sending all but the last byte of a ``size`` body and
    holding; stops sending on one the server has answered (closed)."""
    socks = []
    chunk = b"0" * 65536
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(post_head(path, size, extra))
        sock.settimeout(10)
        try:
            for _ in range((size - 1) // len(chunk)):
                sock.sendall(chunk)
            sock.sendall(b"0" * ((size - 1) % len(chunk)))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        socks.append(sock)
    return socks


def test_bodies_in_flight_are_bounded_server_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """24 connections upload 8 MiB each (192 MiB) and hold; the server holds at most its
    16 MiB budget of them, refuses the rest with 503, and the probe keeps nothing."""
    monkeypatch.setenv("EDGESPLIT_MAX_BODIES_MB", "16")
    size = 8 * 1024 * 1024
    with CloudProcess("--max-body-mb", "9", models="mnist_cnn") as server:
        httpx.get(f"{server.url}/v2/health/ready")
        before = memory_kb(server)
        socks = hold_uploads(server.port, "/v2/models/mnist_cnn/infer", 24, size,
                             {HEADER_LENGTH: "20"})  # binary: the large limit
        probes = hold_uploads(server.port, "/edgesplit/probe", 24, size)
        try:
            grew_mb = (memory_kb(server) - before) / 1024
            refused = [read_answer(sock, 1) for sock in socks]
            assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
        finally:
            for sock in socks + probes:
                sock.close()
    print(f"24 x 8 MiB held to /infer and 24 x 8 MiB to the probe: the server grew "
          f"{grew_mb:.0f} MiB (budget 16 MiB)")
    assert sum(a.startswith(b"HTTP/1.1 503") for a in refused) >= 20
    assert grew_mb < 16 + 40  # the budget, uvicorn's 64 KiB per connection, allocator slack


# 4. An endless header.

def stream_header(port: int, limit_bytes: int) -> tuple[int, bytes]:
    """Stream one header value until the server cuts the connection (bounded by
    ``limit_bytes``); the bytes it took and its answer."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            while sent < limit_bytes:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        return sent, read_answer(sock, 5)


def test_an_endless_header_is_cut_at_64_kib(cloud: CloudProcess) -> None:
    sent, answer = stream_header(cloud.port, 200 * 1024 * 1024)
    assert sent < 64 * 1024 * 1024  # cut long before the loop's bound (kernel buffers aside)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert httpx.get(f"{cloud.url}/v2/health/live").json() == {"live": True}
    long_url = raw_request(cloud.port, b"GET /v2/health/live?" + b"q" * 70_000 + b" HTTP/1.1\r\n"
                           b"Host: x\r\n\r\n")
    assert long_url == b"" or long_url.startswith(b"HTTP/1.1 431")
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(1000))
    assert raw_request(cloud.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + many
                       + b"\r\n").startswith(b"HTTP/1.1 431")
    normal = raw_request(cloud.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-A: "
                         + b"b" * 60_000 + b"\r\n\r\n")
    assert normal.startswith(b"HTTP/1.1 200")  # under the limit: served


# 5. JSON amplification.

def json_body(elements: int, shape: list[int]) -> bytes:
    data = ",".join(["0.5"] * elements)
    return (f'{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "FP32", '
            f'"data": [{data}]}}], "parameters": {{"split_point": 0}}}}').encode()


def test_json_bodies_are_small_and_cheap(cloud: CloudProcess) -> None:
    url = f"{cloud.url}/v2/models/alexnet/infer"
    too_big = json_body(1_100_000, [1])  # 4.4 MB: over the 4 MiB JSON limit, never read
    answer = httpx.post(url, content=too_big, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "JSON" in answer.json()["error"]
    # Just under the limit, with one value short of its shape so no tail runs: the parse
    # is what is measured.
    shape = [6, 3, 224, 224]
    body = json_body(6 * 3 * 224 * 224 - 1, shape)
    assert len(body) < 4 * 1024 * 1024
    peak_before = memory_kb(cloud, "VmHWM")
    threads = [threading.Thread(target=lambda: httpx.post(url, content=body, timeout=60))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answer = httpx.post(url, content=body, timeout=60)
    assert answer.status_code == 400 and "needs 903168 values" in answer.json()["error"]
    peak_mb = (memory_kb(cloud, "VmHWM") - peak_before) / 1024
    body_mb = len(body) / 1024 / 1024
    print(f"4 JSON bodies of {body_mb:.1f} MiB, 3 at once: peak grew {peak_mb:.0f} MiB")
    assert peak_mb < 3 * body_mb * 8  # a small multiple of the bodies, not 30x


# 6. Trailing zstd data, the docs, and a half-closed short body.

def test_a_zstd_frame_with_anything_after_it_is_refused(cloud: CloudProcess,
                                                        split_model: SplitFactory) -> None:
    split = split_model("mnist_cnn")
    activation = split.head(zoo.sample_input("mnist_cnn"), 5)[0]
    good = encode_tensor(activation, parse_codec("raw+zstd"), "x")
    for tail in (b"", good.payload, b"garbage", b"\0"):
        tensor = type(good)(good.name, good.shape, good.datatype, good.payload + tail,
                            good.parameters)
        body, headers = encode_request([tensor], {"split_point": 5})
        answer = httpx.post(f"{cloud.url}/v2/models/mnist_cnn/infer", content=body,
                            headers=headers)
        assert answer.status_code == (200 if not tail else 400), answer.text
        if tail:
            assert "unused data" in answer.json()["error"]


def test_the_docs_are_behind_the_credential(tmp_path: Path) -> None:
    with CloudProcess("--token", "docs-token", models="mnist_cnn") as server:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(server.url + path).status_code == 401
            answer = httpx.get(server.url + path, headers={"authorization": "Bearer docs-token"})
            assert answer.status_code == 200
        schema = httpx.get(server.url + "/openapi.json",
                           headers={"authorization": "Bearer docs-token"}).json()
        assert "/v2/models/{model}/infer" in schema["paths"]
        assert httpx.get(server.url + "/v2/health/live").status_code == 200  # stays open


@pytest.mark.parametrize("path", ["/v2/models/mnist_cnn/infer", "/offload", "/edgesplit/probe"])
def test_a_short_body_then_a_half_close_gets_a_400(cloud: CloudProcess, path: str) -> None:
    answer = raw_request(cloud.port, post_head(path, 100), b'{"a": ', half_close=True)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"the body ended after 6 of the 100 bytes" in answer


@pytest.mark.parametrize("path", ["/v2/models/mnist_cnn/infer", "/offload"])
def test_deeply_nested_json_is_a_400(cloud: CloudProcess, path: str) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    for body in (deep, b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": '
                 + deep + b"}]}", b'{"tensor": ' + deep + b"}"):
        answer = httpx.post(cloud.url + path, content=body)
        assert answer.status_code == 400, answer.text
