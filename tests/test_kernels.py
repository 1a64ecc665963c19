"""Fully connected layers on a kernel chosen per batch size (``cloud.kernels``)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from edgesplit.cloud.kernels import Kernel, TunedLinear, batch_sizes, fastest, kernels, tune_linears
from edgesplit.core.splitting import SplitModel
from edgesplit.errors import InvalidArgument

pytestmark = pytest.mark.fast
# The pinned torch has oneDNN; a build without it offers the other two kernels only.
ONEDNN = ("onednn" if torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
          else "linear")  # (torch leaves is_available untyped)


def _mlp() -> tuple[SplitModel, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    x = torch.randn(1, 64)
    return SplitModel(model, x), x


def test_sizes_timed() -> None:
    assert batch_sizes(1) == [1]
    assert batch_sizes(8) == [1, 2, 4, 8]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]


def test_each_batch_size_runs_on_its_kernel_with_the_same_results() -> None:
    split, reference = _mlp()[0], _mlp()[0]
    asked: list[tuple[int, int]] = []

    def choose(layer: nn.Linear, rows: int, found: dict[str, Kernel]) -> str:
        asked.append((layer.in_features, rows))
        return "weight_stationary" if rows >= 4 else ONEDNN if rows == 2 else "linear"

    original = split.called_modules()["0"]
    chosen = tune_linears(split, 8, choose)
    assert chosen == {name: {1: "linear", 2: ONEDNN, 4: "weight_stationary",
                             8: "weight_stationary"} for name in ("0", "2")}
    assert sorted(asked) == sorted((f, r) for f in (64, 32) for r in (1, 2, 4, 8))
    layers = split.called_modules()
    assert isinstance(layers["0"], TunedLinear) and isinstance(layers["2"], TunedLinear)
    assert layers["0"].weight is original.weight  # the same parameters, not a copy
    for rows in (1, 2, 3, 4, 7, 8, 11):  # past the largest size: its kernel
        batch = torch.randn(rows, 64)
        torch.testing.assert_close(split.tail([batch], 0), reference.tail([batch], 0),
                                   rtol=1e-4, atol=1e-5)


def test_a_layer_keeps_its_parameters_and_odd_inputs_run_as_linear() -> None:
    layer = nn.Linear(6, 4)
    tuned = TunedLinear(layer, {1: "weight_stationary"})
    assert tuned.weight is layer.weight and tuned.bias is layer.bias
    three_d = torch.randn(2, 5, 6)  # (batch, tokens, features): not a (rows, features) matmul
    torch.testing.assert_close(tuned(three_d), layer(three_d))
    no_bias, x = nn.Linear(6, 4, bias=False), torch.randn(3, 6)
    torch.testing.assert_close(TunedLinear(no_bias, {8: "weight_stationary"})(x), no_bias(x))


def test_every_kernel_computes_linear() -> None:
    torch.manual_seed(1)
    layer, no_bias = nn.Linear(300, 70), nn.Linear(300, 70, bias=False)
    assert set(kernels(layer)) == {"linear", "weight_stationary", ONEDNN}
    with torch.inference_mode():
        for module in (layer, no_bias):
            for rows in (1, 2, 5, 8):
                x = torch.randn(rows, 300)
                for name, kernel in kernels(module).items():
                    torch.testing.assert_close(kernel(x), module(x), rtol=1e-4, atol=1e-5,
                                               msg=partial("{}: {}".format, name))
    assert set(kernels(nn.Linear(8, 4).to(torch.float64))) == {"linear", "weight_stationary"}


def test_a_layer_keeps_only_its_chosen_kernels() -> None:
    tuned = TunedLinear(nn.Linear(6, 4), {1: "linear", 2: "linear", 8: ONEDNN})
    assert set(tuned._kernels) == {"linear", ONEDNN}
    assert not list(tuned.children())  # the packed weights are not a submodule's parameters
    assert [name for name, _ in tuned.named_parameters()] == ["weight", "bias"]


def test_the_timed_choice_is_a_kernel_and_only_called_modules_swap() -> None:
    layer = nn.Linear(16, 8)
    assert fastest(layer, 4, kernels(layer), repeats=1) in {"linear", "weight_stationary",
                                                            "onednn"}
    split, _ = _mlp()
    with pytest.raises(InvalidArgument, match="not a submodule"):
        split.swap_module("nope", nn.Identity())
