"""The Ray Serve backend: its options, its one line when Ray is missing, a guarded cluster,
and the attacks of ``test_attacks.py`` and ``test_security.py`` on Ray.

The endpoint tests of ``test_server.py`` run against Ray Serve too (its ``cloud`` fixture).
Every attack test there that takes the ``cloud`` or ``signed_cloud`` fixture is collected here
again, with those fixtures served by Ray (``ON_RAY`` below): a new attack written against those
fixtures runs on both backends by itself. Attacks that need a server configured their own way
have a Ray version here (``TestRayLimits``), all on one Ray start per class: Ray takes 11 to 30 s
to start and holds about 1 GB.
"""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import torch

from edgesplit.cloud.ray_backend import Scaling, join_with_token
from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.edge.client import CloudClient
from edgesplit.errors import InvalidArgument, Unauthorized
from edgesplit.testbed.processes import CloudProcess, free_port
from edgesplit.wire.auth import sign_request
from edgesplit.wire.codecs import encode_tensor
from edgesplit.wire.protocol import HEADER_LENGTH, encode_request, parse_response

from . import test_attacks, test_security
from .conftest import RAY_MISSING, ray_installed
from .helpers import mnist_request
from .test_attacks import KEYS, memory_kb, post_head, read_answer, trickle_after


def test_scaling_options() -> None:
    assert Scaling.parse(None, None).options() == {"num_replicas": 1}
    assert Scaling.parse(3, None).options() == {"num_replicas": 3}
    auto = Scaling.parse(None, "1:4").options()["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"]) == (1, 4)
    for replicas, autoscale, message in ((2, "1:2", "not both"), (None, "3:1", "MIN:MAX"),
                                         (None, "x", "MIN:MAX"), (0, None, "1 or more")):
        with pytest.raises(InvalidArgument, match=message):
            Scaling.parse(replicas, autoscale)


def run_cli(*args: str, hide_ray: bool = False) -> subprocess.CompletedProcess[str]:
    # ``hide_ray`` makes ``import ray`` fail in the child, as on a machine without the extra.
    prelude = "sys.modules['ray'] = None; " if hide_ray else ""
    code = "import sys; " + prelude + "from edgesplit.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, "cloud", "serve", *args],
                          capture_output=True, text=True, timeout=120)


def test_without_ray_the_flag_fails_with_one_line() -> None:
    done = run_cli("--backend", "ray", "--models", "mnist_cnn", hide_ray=True)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "pip install 'edgesplit[ray]'" in line


@pytest.mark.parametrize(("args", "message"), [
    (("--replicas", "2"), "go with --backend ray"),
    (("--device", "cuda"), "no usable CUDA GPU"),
    (("--device", "cuda:7"), "no usable CUDA GPU"),
    (("--device", "tpu"), "expected cpu, cuda or cuda:N"),
    (("--backend", "ray", "--host", "0.0.0.0"), "refusing to serve on 0.0.0.0 without auth"),
])
def test_misplaced_or_impossible_options_fail_with_one_line(args: tuple[str, ...],
                                                            message: str) -> None:
    done = run_cli("--models", "mnist_cnn", *args)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert message in line


@pytest.mark.skipif(not ray_installed(), reason=RAY_MISSING)
def test_an_own_file_that_cannot_be_served_fails_before_ray_starts(tmp_path: Path) -> None:
    bad = tmp_path / "my_net.pt2"
    bad.write_bytes(b"not a program")
    done = run_cli("--backend", "ray", "--models", f"mnist_cnn,{bad}")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "my_net.pt2" in line and "Ray" not in done.stderr, done.stderr


@pytest.mark.skipif(not ray_installed(), reason=RAY_MISSING)
def test_two_replicas_join_a_running_cluster_behind_a_token(
        split_model: Callable[[str], SplitModel], tmp_path: Path) -> None:
    # A cluster someone else started (`ray start --head`): the server joins it with
    # --ray-address, serves on it with two replicas, a credential and TLS (the front holds the
    # certificate), and leaves it running when it stops. Ray's sockets live in its temp dir,
    # whose path must stay short (pytest's tmp_path is too long for a socket).
    cert, key = test_security.self_signed(tmp_path)
    gcs_port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
         f"--port={gcs_port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        server = CloudProcess("--backend", "ray", "--ray-address", f"127.0.0.1:{gcs_port}",
                              "--replicas", "2", "--token", "s3cret", "--tls-cert", str(cert),
                              "--tls-key", str(key), models="mnist_cnn", scheme="https")
        trust = ssl.create_default_context(cafile=cert)
        server.start(ready_timeout_s=300, verify=trust)
        try:
            url = f"{server.url}/v2/models/mnist_cnn"
            assert httpx.get(url, timeout=30, verify=trust).status_code == 401
            assert httpx.get(url, headers={"authorization": "Bearer wrong"}, timeout=30,
                             verify=trust).status_code == 401
            assert httpx.get(f"{server.url}/v2/health/ready", timeout=30, verify=trust).json(
                ) == {"ready": True}
            with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets nowhere
                httpx.get(server.url.replace("https", "http") + "/v2/health/live")
            tensors, expected = mnist_request(split_model("mnist_cnn"))
            body, headers = encode_request(tensors, {"split_point": 5})
            answers = [httpx.post(f"{url}/infer", content=body, timeout=60, verify=trust,
                                  headers=headers | {"authorization": "Bearer s3cret"})
                       for _ in range(4)]  # both replicas answer alike
            assert [a.status_code for a in answers] == [200] * 4, answers[0].text
            answer = answers[-1]
            _, (output,) = parse_response(answer.content, answer.headers.get(HEADER_LENGTH))
            torch.testing.assert_close(output, expected)
        finally:
            server.stop()
        assert head.poll() is None  # the cluster outlives the server that joined it
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.fast
def test_joining_sends_rays_token_where_there_is_one(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    assert not join_with_token(environ, tmp_path) and environ == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t" * 64)
    assert join_with_token(environ := {}, tmp_path) and environ == {"RAY_AUTH_MODE": "token"}
    assert join_with_token(environ := {"RAY_AUTH_TOKEN": "t"}, tmp_path / "none")
    assert not join_with_token(environ := {"RAY_AUTH_MODE": "disabled"}, tmp_path)
    assert environ == {"RAY_AUTH_MODE": "disabled"}  # the user's choice stands


# The attacks on Ray. One server for the attacks that need their own limits (the test
# module's ``signed_cloud`` is the same server), and the shared ``ray_cloud`` for ``cloud``.

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


@pytest.fixture(scope="module")
def signed_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudProcess]:
    """Ray, signed requests only, at most 2 pending tails, a 1 s grace for bodies, 16 MiB of
    bodies in flight and 9 MiB per body: what the attacks below need, in one Ray start."""
    if not ray_installed():
        pytest.skip(RAY_MISSING)
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text("".join(f"{k} {v.decode()}\n" for k, v in KEYS.items()))
    server = CloudProcess("--backend", "ray", "--hmac-keys", str(keys), "--max-pending", "2",
                          "--workers", "1", "--max-body-mb", "9", models="mnist_cnn,alexnet")
    with pytest.MonkeyPatch.context() as patch:  # the child reads them; this process does not
        patch.setenv("EDGESPLIT_BODY_TIMEOUT_S", "1")
        patch.setenv("EDGESPLIT_MAX_BODIES_MB", "16")
        server.start(ready_timeout_s=300)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cloud(ray_cloud: CloudProcess) -> CloudProcess:
    """The attack tests' open server, on Ray."""
    return ray_cloud


def signed_head(path: str, body: bytes, extra: dict[str, str] | None = None) -> bytes:
    """The head of a POST of ``body`` to ``path``, signed with the first test key."""
    key, secret = next(iter(KEYS.items()))
    headers = sign_request("POST", path, body, key, secret, time.time()) | (extra or {})
    return post_head(path, len(body), headers)


def listeners(process: CloudProcess) -> list[tuple[int, str, str, int]]:
    """Every listening TCP socket of the server and its descendants: pid, name, address,
    port."""
    found = []
    root = psutil.Process(process.pid())
    for proc in [root, *root.children(recursive=True)]:
        try:
            found += [(proc.pid, proc.name(), c.laddr.ip, c.laddr.port)
                      for c in proc.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue  # a worker that ended while we looked
    return found


def test_rays_own_ports_listen_on_loopback(signed_cloud: CloudProcess) -> None:
    """Started with the default --host 127.0.0.1: the front, Serve's proxy, the GCS, raylet,
    agents and metrics exporters all listen on loopback only. The one exception is fixed in
    Ray (2.60's replica.py binds its inter-deployment gRPC server to "[::]:0"): it asks for
    Ray's cluster token, which no client of ours has."""
    import grpc

    found = listeners(signed_cloud)
    assert (signed_cloud.pid(), signed_cloud.port) in {(pid, port) for pid, _, _, port in found}
    assert len(found) > 5  # Ray's own, not only the front
    open_ = [(name, ip, port) for _, name, ip, port in found if ip not in LOOPBACK]
    assert all(name.startswith("ray::ServeReplica") for name, _, _ in open_), open_
    for _, _, port in open_:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/ray.serve.ASGIService/HandleRequest")
            with pytest.raises(grpc.RpcError) as refused:
                call(b"", timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


class TestRayLimits:
    """The limits the built-in server enforces, enforced on Ray by the front."""

    def test_past_max_pending_ray_answers_503(self, signed_cloud: CloudProcess,
                                              split_model: Callable[[str], SplitModel]) -> None:
        split = split_model("alexnet")
        tensors = [encode_tensor(t, name="x")
                   for t in split.head(zoo.sample_input("alexnet"), 0)]
        content, headers = encode_request(tensors, {"split_point": 0})
        answers: list[httpx.Response] = []
        path = "/v2/models/alexnet/infer"

        def offload() -> None:
            key, secret = next(iter(KEYS.items()))
            signed = sign_request("POST", path, content, key, secret, time.time())
            answers.append(httpx.post(signed_cloud.url + path, content=content,
                                      headers=headers | signed, timeout=120))

        threads = [threading.Thread(target=offload) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = [a.status_code for a in answers]
        assert set(statuses) == {200, 503}, [a.text for a in answers if a.status_code != 200]
        refused = [a for a in answers if a.status_code == 503]
        assert {a.headers["retry-after"] for a in refused} == {"1"}
        assert all("busy" in a.json()["error"] for a in refused)

    def test_the_front_refuses_what_the_replica_refuses(self, signed_cloud: CloudProcess
                                                       ) -> None:
        """The front checks signatures without spending their nonces; the replica spends
        them: a captured request sent again byte for byte is still refused."""
        path = "/v2/models/mnist_cnn/infer"
        body = b'{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0]}]}'
        key, secret = next(iter(KEYS.items()))
        headers = sign_request("POST", path, body, key, secret, time.time())
        first = httpx.post(signed_cloud.url + path, content=body, headers=headers, timeout=60)
        again = httpx.post(signed_cloud.url + path, content=body, headers=headers, timeout=60)
        assert first.status_code == 400  # authenticated, then the (wrong) shape was refused
        assert again.status_code == 401 and "replayed" in again.json()["error"]
        for route in (path, "/docs", "/openapi.json", "/metrics", "/edgesplit/load"):
            answer = httpx.request("POST" if route == path else "GET", signed_cloud.url + route,
                                   timeout=60)
            assert answer.status_code == 401, (route, answer.text)
            assert "missing request signature" in answer.json()["error"]
        assert httpx.get(f"{signed_cloud.url}/v2/health/live", timeout=60).status_code == 200

    def test_slow_signed_uploads_hold_no_replica(self, signed_cloud: CloudProcess,
                                                 split_model: Callable[[str], SplitModel]
                                                 ) -> None:
        """Six signed uploads at 20 KiB/s (above the 16 KiB/s floor, three times
        --max-pending): inferences are answered while every one of them is still uploading."""
        path = "/v2/models/mnist_cnn/infer"
        body = b"u" * (200 * 1024)  # ten seconds at 20 KiB/s
        finished: list[bytes] = []
        started = threading.Barrier(7, timeout=120)

        def upload() -> None:
            with socket.create_connection(("127.0.0.1", signed_cloud.port)) as sock:
                sock.sendall(signed_head(path, body))
                started.wait()
                for offset in range(0, len(body), 2048):
                    sock.sendall(body[offset:offset + 2048])
                    time.sleep(0.1)
                finished.append(read_answer(sock, 60))

        threads = [threading.Thread(target=upload) for _ in range(6)]
        for thread in threads:
            thread.start()
        started.wait()
        tensors, expected = mnist_request(split_model("mnist_cnn"))
        with CloudClient(signed_cloud.url, signing=next(iter(KEYS.items()))) as client:
            for _ in range(3):
                output = client.infer("mnist_cnn", 5, tensors, 60).output
                assert finished == []  # answered while all six still upload
                assert torch.allclose(output, expected, atol=1e-6)
        for thread in threads:
            thread.join()
        assert len(finished) == 6  # the body is no JSON (400), or six at once are past
        assert all(a.startswith((b"HTTP/1.1 400", b"HTTP/1.1 503")) for a in finished), finished

    def test_a_trickle_is_cut_off_and_holds_no_slot(self, signed_cloud: CloudProcess,
                                                    split_model: Callable[[str], SplitModel]
                                                    ) -> None:
        """One byte per 50 ms, signed: 408 after the 1 s grace, while an inference goes on."""
        path = "/v2/models/mnist_cnn/infer"
        results: list[tuple[bytes, int]] = []

        def trickle() -> None:
            head = signed_head(path, b"x" * 100_000)
            results.append(trickle_after(signed_cloud.port, head))

        threads = [threading.Thread(target=trickle) for _ in range(4)]
        for thread in threads:
            thread.start()
        tensors, expected = mnist_request(split_model("mnist_cnn"))
        with CloudClient(signed_cloud.url, signing=next(iter(KEYS.items()))) as client:
            assert torch.allclose(client.infer("mnist_cnn", 5, tensors, 30).output, expected,
                                  atol=1e-6)
        for thread in threads:
            thread.join()
        for answer, sent in results:
            assert answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer, answer
            assert sent < 2000

    def test_bodies_in_flight_are_bounded(self, signed_cloud: CloudProcess) -> None:
        """24 signed 8 MiB uploads held: the front keeps at most its 16 MiB budget of them."""
        size = 8 * 1024 * 1024
        path = "/v2/models/mnist_cnn/infer"
        head = signed_head(path, b"0" * size, {HEADER_LENGTH: "20"})
        httpx.get(f"{signed_cloud.url}/v2/health/ready")
        before = memory_kb(signed_cloud)
        socks = hold_signed(signed_cloud.port, head, 24, size)
        try:
            grew_mb = (memory_kb(signed_cloud) - before) / 1024
            refused = [read_answer(sock, 1) for sock in socks]
            assert httpx.get(f"{signed_cloud.url}/v2/health/ready").json() == {"ready": True}
        finally:
            for sock in socks:
                sock.close()
        print(f"Ray's front: 24 x 8 MiB held, grew {grew_mb:.0f} MiB (budget 16 MiB)")
        assert sum(a.startswith(b"HTTP/1.1 503") for a in refused) >= 20
        assert grew_mb < 16 + 40


def hold_signed(port: int, head: bytes, count: int, size: int) -> list[socket.socket]:
    """``count`` connections each sending ``head`` and all but the last byte of its body."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.settimeout(10)
        try:
            sock.sendall(head)
            for offset in range(0, size - 1, 65536):
                sock.sendall(b"0" * min(65536, size - 1 - offset))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        socks.append(sock)
    return socks


def _on_ray(module: Any) -> dict[str, Callable[..., None]]:
    """The tests of ``module`` that attack the ``cloud`` or ``signed_cloud`` fixture."""
    return {name: test for name, test in vars(module).items()
            if name.startswith("test_") and callable(test)
            and {"cloud", "signed_cloud"} & set(inspect.signature(test).parameters)}


ON_RAY = _on_ray(test_attacks) | _on_ray(test_security)
globals().update(ON_RAY)  # collected here again: the fixtures above make them run on Ray


@pytest.mark.fast
def test_the_front_checks_a_signature_without_spending_its_nonce() -> None:
    from edgesplit.wire.auth import HmacVerifier

    verifier = HmacVerifier(KEYS)
    path = "/v2/models/m/infer"
    headers = sign_request("POST", path, b"{}", "edge-1", KEYS["edge-1"], 1_800_000_000.0)
    for _ in range(2):  # the front, as often as it likes
        verifier.verify_headers("POST", path, headers, 1_800_000_001.0, spend_nonce=False)
    verifier.verify_headers("POST", path, headers, 1_800_000_002.0)  # the replica, once
    with pytest.raises(Unauthorized, match="replayed"):
        verifier.verify_headers("POST", path, headers, 1_800_000_003.0)
    forged = headers | {"x-edgesplit-signature": "0" * 64}
    with pytest.raises(Unauthorized, match="bad request signature"):
        verifier.verify_headers("POST", path, forged, 1_800_000_003.0, spend_nonce=False)
