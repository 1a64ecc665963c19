"""Shared fixtures: zoo models built once per session, and a private profile cache."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest
import torch

from edgesplit.core import zoo
from edgesplit.core.profiles import Profile
from edgesplit.core.splitting import SplitModel
from edgesplit.measuring.store import write_profile
from edgesplit.testbed.processes import CloudProcess


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
    from edgesplit.measuring.profiler import profile_model

    profile = profile_model("mnist_cnn", repeats=3, warmup=1, clocks_ghz=(0.6, 1.2),
                            calibration_repeats=1)
    return write_profile(profile, tmp_path_factory.mktemp("profiles") / "mnist_cnn.json")


@pytest.fixture(scope="session")
def mnist_quick_profile() -> Profile:
    """A quick real profile of the MNIST CNN on this machine (no clock calibration)."""
    from edgesplit.measuring.profiler import profile_model

    return profile_model("mnist_cnn", repeats=1, warmup=1, clocks_ghz=(),
                         split=_split_model("mnist_cnn"))


@pytest.fixture(scope="session")
def alexnet_profile() -> Profile:
    """A quick real profile of AlexNet on this machine (no clock calibration)."""
    from edgesplit.measuring.profiler import profile_model

    return profile_model("alexnet", repeats=2, warmup=1, clocks_ghz=(),
                         split=_split_model("alexnet"))


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
