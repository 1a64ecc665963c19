"""The Ray Serve backend: its options, its one line when Ray is missing, and a guarded cluster.

The endpoint tests of ``test_server.py`` run against Ray Serve too (its ``cloud`` fixture)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch

from edgesplit.cloud.ray_backend import Scaling, join_with_token
from edgesplit.core.splitting import SplitModel
from edgesplit.errors import InvalidArgument
from edgesplit.testbed.processes import CloudProcess, free_port
from edgesplit.wire.protocol import HEADER_LENGTH, encode_request, parse_response

from .conftest import RAY_MISSING, ray_installed
from .helpers import mnist_request


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
])
def test_misplaced_or_impossible_options_fail_with_one_line(args: tuple[str, ...],
                                                            message: str) -> None:
    done = run_cli("--models", "mnist_cnn", *args)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert message in line


@pytest.mark.skipif(not ray_installed(), reason=RAY_MISSING)
def test_two_replicas_join_a_running_cluster_behind_a_token(
        split_model: Callable[[str], SplitModel]) -> None:
    # A cluster someone else started (`ray start --head`): the server joins it with
    # --ray-address, serves on it with two replicas and a credential, and leaves it running
    # when it stops. Ray's sockets live in its temp dir, whose path must stay short (pytest's
    # tmp_path is too long for a socket).
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
                              "--replicas", "2", "--token", "s3cret", models="mnist_cnn")
        server.start(ready_timeout_s=300)
        try:
            url = f"{server.url}/v2/models/mnist_cnn"
            assert httpx.get(url, timeout=30).status_code == 401
            assert httpx.get(url, headers={"authorization": "Bearer wrong"}, timeout=30
                             ).status_code == 401
            assert httpx.get(f"{server.url}/v2/health/ready", timeout=30).json() == {
                "ready": True}
            tensors, expected = mnist_request(split_model("mnist_cnn"))
            body, headers = encode_request(tensors, {"split_point": 5})
            answers = [httpx.post(f"{url}/infer", content=body, timeout=60,
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
