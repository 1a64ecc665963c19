"""Shared fixtures: zoo models built once per session, and a private profile cache."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import torch

from edgesplit import zoo
from edgesplit.profiles import write_profile
from edgesplit.splitting import SplitModel


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read or write the user's profile cache."""
    os.environ["EDGESPLIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session", autouse=True)
def fixed_threads() -> None:
    torch.set_num_threads(2)


@cache
def _split_model(name: str) -> SplitModel:
    return SplitModel(zoo.build_model(name), zoo.sample_input(name))


@pytest.fixture(scope="session")
def split_model() -> Callable[[str], SplitModel]:
    """Zoo models as ``SplitModel``s, each built once per session (VGG16 takes seconds)."""
    return _split_model


@pytest.fixture(scope="session")
def mnist_profile_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, calibrated profile of the MNIST CNN on this machine, measured once."""
    from edgesplit.profiler import profile_model

    profile = profile_model("mnist_cnn", repeats=3, warmup=1, clocks_ghz=(0.6, 1.2),
                            calibration_repeats=1)
    return write_profile(profile, tmp_path_factory.mktemp("profiles") / "mnist_cnn.json")
