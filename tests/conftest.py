"""Shared fixtures: zoo models built once per session, and a private profile cache."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import httpx
import pytest
import torch

from edgesplit.core import zoo
from edgesplit.core.profiles import Profile, write_profile
from edgesplit.core.splitting import SplitModel


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's profile cache."""
    os.environ["EDGESPLIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session", autouse=True)
def fixed_threads() -> None:
    torch.set_num_threads(2)


@cache
def _split_model(name: str) -> SplitModel:
    return zoo.build_split(name)


@pytest.fixture(scope="session")
def split_model() -> Callable[[str], SplitModel]:
    """Zoo models as ``SplitModel``s, each built once per session (VGG16 takes seconds)."""
    return _split_model


@pytest.fixture(scope="session")
def mnist_profile_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, calibrated profile of the MNIST CNN on this machine, measured once."""
    from edgesplit.core.profiler import profile_model

    profile = profile_model("mnist_cnn", repeats=3, warmup=1, clocks_ghz=(0.6, 1.2),
                            calibration_repeats=1)
    return write_profile(profile, tmp_path_factory.mktemp("profiles") / "mnist_cnn.json")


@pytest.fixture(scope="session")
def alexnet_profile() -> Profile:
    """A quick real profile of AlexNet on this machine (no clock calibration)."""
    from edgesplit.core.profiler import profile_model

    return profile_model("alexnet", repeats=2, warmup=1, clocks_ghz=(),
                         split=_split_model("alexnet"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CloudProcess:
    """A real ``edgesplit cloud serve`` process on a loopback port."""

    def __init__(self, *args: str, models: str = "mnist_cnn,alexnet,resnet18",
                 port: int | None = None, scheme: str = "http") -> None:
        self.port = port or free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.args = ["--port", str(self.port), "--models", models, "--log-level", "warning",
                     *args]
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start the process and return at once (``start`` also waits until it is ready)."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgesplit.cli", "cloud", "serve", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self, ready_timeout_s: float = 90.0,
              verify: bool | ssl.SSLContext = True) -> CloudProcess:
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the cloud exited: {self.process.stderr.read().decode()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1, verify=verify).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the cloud did not become ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> CloudProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def cloud() -> Iterator[CloudProcess]:
    """One shared cloud server for the tests that only send it requests."""
    with CloudProcess() as server:
        yield server


RAY_MISSING = "the ray extra is not installed (pip install 'edgesplit[ray]')"


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


@pytest.fixture(scope="session")
def ray_cloud() -> Iterator[CloudProcess]:
    """The same server as ``cloud``, as a Ray Serve deployment on a local Ray, batching."""
    if not ray_installed():
        pytest.skip(RAY_MISSING)
    server = CloudProcess("--backend", "ray", "--max-batch-size", "4", "--batch-wait-ms", "1")
    server.start(ready_timeout_s=300)  # Ray starts in ~30 s on 2 busy cores
    try:
        yield server
    finally:
        server.stop()
