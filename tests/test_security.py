"""Authentication, TLS, safe defaults and resource bounds."""

from __future__ import annotations

import ast
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch

from edgesplit.core import zoo
from edgesplit.core.profiles import Profile
from edgesplit.core.splitting import SplitModel
from edgesplit.edge.client import CloudClient
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.errors import CloudUnavailable, InvalidArgument, Unauthorized
from edgesplit.testbed.processes import CloudProcess
from edgesplit.wire.auth import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HmacVerifier,
    NonceCache,
    read_keys,
    read_secret,
    sign_request,
)
from edgesplit.wire.codecs import encode_tensor

from .helpers import mnist_request

SplitFactory = Callable[[str], SplitModel]
KEYS = {"river-1": b"first-edge-secret", "river-2": b"second-edge-secret"}
NOW = 1_800_000_000.0


def signed(body: bytes = b"{}", key: str = "river-1", now: float = NOW,
           path: str = "/v2/models/m/infer") -> dict[str, str]:
    return sign_request("POST", path, body, key, KEYS[key], now)


def test_a_signed_request_verifies_once() -> None:
    verifier = HmacVerifier(KEYS)
    headers = signed()
    assert verifier.verify("POST", "/v2/models/m/infer", headers, b"{}", NOW + 3) == "river-1"
    with pytest.raises(Unauthorized, match="replayed"):
        verifier.verify("POST", "/v2/models/m/infer", headers, b"{}", NOW + 4)


@pytest.mark.parametrize(("change", "message"), [
    (lambda h: h, None),
    (lambda h: h | {"x-edgesplit-key": "river-2"}, "bad request signature"),
    (lambda h: h | {"x-edgesplit-key": "river-9"}, "bad request signature"),  # no hint
    (lambda h: h | {"x-edgesplit-key": "../../etc"}, "bad request signature"),
    (lambda h: h | {SIGNATURE_HEADER: "0" * 64}, "bad request signature"),
    (lambda h: h | {NONCE_HEADER: "not hex!"}, "malformed"),
    (lambda h: h | {TIMESTAMP_HEADER: "-5"}, "malformed"),
    (lambda h: h | {TIMESTAMP_HEADER: "\u00b2"}, "malformed"),  # a digit to isdigit(), not int()
    (lambda h: h | {TIMESTAMP_HEADER: "9" * 400}, "malformed"),
    (lambda h: {k: v for k, v in h.items() if k != NONCE_HEADER}, "missing request signature"),
])
def test_tampered_signatures_are_refused(change: Callable[[dict[str, str]], dict[str, str]],
                                         message: str | None) -> None:
    verifier = HmacVerifier(KEYS)
    headers = change(signed())
    if message is None:
        verifier.verify("POST", "/v2/models/m/infer", headers, b"{}", NOW)
        return
    with pytest.raises(Unauthorized, match=message):
        verifier.verify("POST", "/v2/models/m/infer", headers, b"{}", NOW)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v2/models/m/infer", b"{}"), ("POST", "/v2/models/x/infer", b"{}"),
    ("POST", "/v2/models/m/infer", b"{ }")])
def test_the_signature_covers_method_path_and_body(method: str, path: str, body: bytes) -> None:
    with pytest.raises(Unauthorized, match="bad request signature"):
        HmacVerifier(KEYS).verify(method, path, signed(), body, NOW)


def test_clock_skew_is_bounded_both_ways() -> None:
    verifier = HmacVerifier(KEYS, max_skew_s=30)
    verifier.verify("POST", "/v2/models/m/infer", signed(now=NOW - 29), b"{}", NOW)
    for skewed in (NOW - 31, NOW + 31):
        with pytest.raises(Unauthorized, match="from the server's clock"):
            verifier.verify("POST", "/v2/models/m/infer", signed(now=skewed), b"{}", NOW)


def test_the_nonce_cache_forgets_only_what_cannot_be_replayed() -> None:
    cache = NonceCache(max_entries=3)
    assert cache.add(("k", "a"), expires=10, now=0)
    assert not cache.add(("k", "a"), expires=10, now=5)
    assert cache.add(("k", "a"), expires=20, now=11)  # expired: a new request may reuse it
    for nonce in "bcd":
        cache.add(("k", nonce), expires=100, now=12)
    assert len(cache) == 3  # bounded


def test_key_files_and_secrets(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# edge keys\nriver-1 abc\n\nriver-2 def\n")
    assert read_keys(keys) == {"river-1": b"abc", "river-2": b"def"}
    keys.write_text("river-1\n")
    with pytest.raises(InvalidArgument, match="line 1: expected '<key id> <secret>'"):
        read_keys(keys)
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert read_secret(secret) == "s3cret"
    with pytest.raises(InvalidArgument, match="cannot read the secret file"):
        read_secret(tmp_path / "missing")



def test_several_edges_sign_with_their_own_keys(tmp_path: Path,
                                                split_model: SplitFactory) -> None:
    keys = tmp_path / "keys"
    keys.write_text("".join(f"{k} {v.decode()}\n" for k, v in KEYS.items()))
    tensors, expected = mnist_request(split_model("mnist_cnn"))
    with CloudProcess("--hmac-keys", str(keys), models="mnist_cnn") as server:
        for key_id, secret in KEYS.items():
            with CloudClient(server.url, signing=(key_id, secret)) as client:
                assert torch.allclose(client.infer("mnist_cnn", 5, tensors, 10).output,
                                      expected, atol=1e-6)
        with CloudClient(server.url, signing=("river-1", b"guessed")) as client, \
                pytest.raises(CloudUnavailable, match="401: bad request signature"):
            client.infer("mnist_cnn", 5, tensors, 10)
        with CloudClient(server.url) as client, \
                pytest.raises(CloudUnavailable, match="401: missing request signature"):
            client.infer("mnist_cnn", 5, tensors, 10)
        # A captured request, sent again byte for byte, is refused.
        body = b'{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0]}]}'
        headers = sign_request("POST", "/v2/models/mnist_cnn/infer", body, "river-2",
                               KEYS["river-2"], time.time())
        first = httpx.post(f"{server.url}/v2/models/mnist_cnn/infer", content=body,
                           headers=headers)
        again = httpx.post(f"{server.url}/v2/models/mnist_cnn/infer", content=body,
                           headers=headers)
        assert first.status_code == 400  # authenticated, then the (wrong) shape was refused
        assert again.status_code == 401 and "replayed" in again.json()["error"]
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        server.stop()
        log = server.output()
    assert all(secret.decode() not in log for secret in KEYS.values())


def test_tokens_can_come_from_files_and_are_not_logged(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("file-token-123\n")
    with CloudProcess("--token-file", str(token), "--log-level", "debug",
                      models="mnist_cnn") as server:
        url = f"{server.url}/v2/models/mnist_cnn"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"authorization": "Bearer file-token-123"}).is_success
        server.stop()
        log = server.output()
    assert "Started server process" in log and "file-token-123" not in log


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import trustme

    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem",
             "other_ca": folder / "other.pem"}
    ca.cert_pem.write_to_path(files["ca"])
    cert.cert_chain_pems[0].write_to_path(files["cert"])
    cert.private_key_pem.write_to_path(files["key"])
    trustme.CA().cert_pem.write_to_path(files["other_ca"])
    return files


def test_https_with_a_ca_the_edge_trusts(tls_files: dict[str, Path],
                                        split_model: SplitFactory) -> None:
    tensors, expected = mnist_request(split_model("mnist_cnn"))
    server = CloudProcess("--tls-cert", str(tls_files["cert"]), "--tls-key",
                          str(tls_files["key"]), models="mnist_cnn", scheme="https")
    server.start(verify=ssl.create_default_context(cafile=tls_files["ca"]))
    try:
        with CloudClient(server.url, verify=str(tls_files["ca"])) as client:
            assert torch.allclose(client.infer("mnist_cnn", 5, tensors, 10).output, expected,
                                  atol=1e-6)
        for verify in (True, str(tls_files["other_ca"])):  # system CAs, or someone else's
            with CloudClient(server.url, verify=verify) as client, \
                    pytest.raises(CloudUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                client.infer("mnist_cnn", 5, tensors, 10)
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets nowhere
            httpx.get(server.url.replace("https", "http") + "/v2/health/live")
        # The edge does not offload to a cloud it cannot verify; it finishes on its own.
        edge = build_runtime(EdgeOptions("mnist_cnn", server.url,
                                         verify=str(tls_files["other_ca"])),
                             split=split_model("mnist_cnn"), profile=_quick_profile(split_model))
        with edge:
            result = edge.infer(zoo.sample_input("mnist_cnn"))
        assert result.measurement.finished == "edge"
        assert "CERTIFICATE_VERIFY_FAILED" in result.measurement.fallback
    finally:
        server.stop()


def _quick_profile(split_model: SplitFactory) -> Profile:
    from edgesplit.measuring.profiler import profile_model

    return profile_model("mnist_cnn", repeats=1, warmup=0, clocks_ghz=(),
                         split=split_model("mnist_cnn"))


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as a field box might make one."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgesplit cloud")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cloud.pem", folder / "cloud.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_pinning_a_self_signed_certificate(tmp_path: Path, split_model: SplitFactory) -> None:
    cert, key = self_signed(tmp_path)
    tensors, expected = mnist_request(split_model("mnist_cnn"))
    server = CloudProcess("--tls-cert", str(cert), "--tls-key", str(key), models="mnist_cnn",
                          scheme="https")
    server.start(verify=ssl.create_default_context(cafile=cert))
    try:
        with CloudClient(server.url, verify=str(cert)) as client:  # trusts this one cert only
            assert torch.allclose(client.infer("mnist_cnn", 5, tensors, 10).output, expected,
                                  atol=1e-6)
        (tmp_path / "other").mkdir()
        other, _ = self_signed(tmp_path / "other")  # same name and address, another key
        with CloudClient(server.url, verify=str(other)) as client, \
                pytest.raises(CloudUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            client.infer("mnist_cnn", 5, tensors, 10)
    finally:
        server.stop()


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgesplit.cli", "cloud", "serve", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_server_refuses_to_serve_a_network_without_credentials() -> None:
    result = serve("--host", "0.0.0.0", "--models", "mnist_cnn")
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "edgesplit: error: refusing to serve on 0.0.0.0 without authentication")


def test_forcing_an_open_server_is_loud() -> None:
    server = CloudProcess("--host", "0.0.0.0", "--allow-unauthenticated", models="mnist_cnn")
    with server:
        server.stop()
        log = server.output()
    assert "WITHOUT AUTHENTICATION" in log and "without TLS" in log


def test_a_stalled_body_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGESPLIT_BODY_TIMEOUT_S", "0.5")
    with CloudProcess(models="mnist_cnn") as server, \
            socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /edgesplit/probe HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b"x" * 10)
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"stalled" in answer


def read_response(sock: socket.socket, timeout_s: float = 30.0) -> bytes:
    """One whole HTTP response (head and Content-Length body), or what came before a close."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _response_length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _response_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


def test_a_full_server_answers_503_with_retry_after(split_model: SplitFactory) -> None:
    split = split_model("alexnet")
    body = [encode_tensor(t, name="x") for t in split.head(zoo.sample_input("alexnet"), 0)]
    statuses: list[int] = []
    retry_after: set[str] = set()
    with CloudProcess("--workers", "1", "--max-pending", "1", models="alexnet") as server:

        def offload() -> None:
            from edgesplit.wire.protocol import encode_request

            content, headers = encode_request(body, {"split_point": 0})
            response = httpx.post(f"{server.url}/v2/models/alexnet/infer", content=content,
                                  headers=headers, timeout=60)
            statuses.append(response.status_code)
            if response.status_code == 503:
                retry_after.add(response.headers["retry-after"])

        threads = [threading.Thread(target=offload) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert httpx.get(f"{server.url}/v2/health/ready").is_success
    assert set(statuses) == {200, 503} and statuses.count(200) >= 1
    assert retry_after == {"1"}


def test_too_many_dimensions_are_refused(cloud: CloudProcess) -> None:
    body = {"inputs": [{"name": "x", "shape": [1] * 17, "datatype": "FP32", "data": [0.0]}]}
    response = httpx.post(f"{cloud.url}/v2/models/mnist_cnn/infer", json=body)
    assert response.status_code == 400 and "shape" in response.json()["error"]


def test_huge_headers_do_not_hurt_the_server(cloud: CloudProcess) -> None:
    with socket.create_connection(("127.0.0.1", cloud.port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000
                     + b"\r\n\r\n")
        sock.settimeout(10)
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 5")
    assert httpx.get(f"{cloud.url}/v2/health/live").json() == {"live": True}


def test_nothing_is_ever_unpickled() -> None:
    """No module imports a deserialiser that runs code; every np.load forbids pickles."""
    unsafe_modules = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
    for path in (Path(__file__).parents[1] / "src" / "edgesplit").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = {alias.name.split(".")[0] for alias in node.names}
                if isinstance(node, ast.ImportFrom) and node.module:
                    names.add(node.module.split(".")[0])
                assert not names & unsafe_modules, (path.name, names)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                call = ast.unparse(node.func)
                assert call not in {"torch.load", "pickle.loads"}, (path.name, call)
                if call == "np.load":
                    keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                    assert keywords.get("allow_pickle") == "False", path.name
            assert not (isinstance(node, ast.Name) and node.id in {"eval", "exec"}), path.name
