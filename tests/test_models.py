"""Model sources and the model digest (``edgesplit.models``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from edgesplit.core.splitting import SplitModel
from edgesplit.core.zoo import build_split
from edgesplit.models.digest import model_digest


class Small(nn.Module):
    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=stride, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def small(seed: int = 0, stride: int = 1) -> SplitModel:
    torch.manual_seed(seed)
    x = torch.randn(1, 3, 8, 8)
    module = Small(stride).eval()
    module(x)  # materialise the lazy layer
    return SplitModel(module, x)


@pytest.mark.fast
def test_the_digest_names_the_weights_and_the_graph() -> None:
    digest = model_digest(small())
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert model_digest(small()) == digest  # the same weights built again
    assert model_digest(small(seed=1)) != digest  # other weights
    assert model_digest(small(stride=2)) != digest  # other hyperparameters, other cuts

    split = small()
    conv = split.graph_module().get_submodule("conv")
    assert isinstance(conv, nn.Conv2d)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] += 1e-6
    assert model_digest(split) != digest  # one weight changed a little

    split = small()
    split.graph_module().get_buffer("bn.running_mean").add_(1.0)
    assert model_digest(split) != digest  # a buffer counts as a weight

    split = small()
    assert model_digest(split) == digest
    split.swap_module("fc", nn.Sequential(split.called_modules()["fc"]))
    assert model_digest(split) == digest  # taken once: a faster kernel is the same model


class Offset(nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(4, dtype=dtype))

    offset: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


@pytest.mark.fast
def test_the_dtype_counts_though_the_bytes_might_not() -> None:
    x = torch.ones(1, 4)
    # Four zero bytes each way: only the dtype tells the two apart.
    assert model_digest(SplitModel(Offset(torch.float32), x)) != model_digest(
        SplitModel(Offset(torch.int32), x))


def test_the_digest_is_the_same_in_another_process() -> None:
    here = model_digest(build_split("mnist_cnn"))
    there = subprocess.run(
        [sys.executable, "-c", "from edgesplit.core.zoo import build_split; "
         "from edgesplit.models.digest import model_digest; "
         "print(model_digest(build_split('mnist_cnn')))"],
        capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    assert there == here
