"""Fully connected layers of batched tails on the faster of two kernels, chosen by measuring.

On some CPUs torch's ``linear`` costs nearly as much per row at a batch of 2 to 8 as at 1. On
the 2-core AMD EPYC VM this was built on, AlexNet's 9216x4096 layer took 7.6 ms for one row,
15.0 for two, 25.3 for four and 28.7 for eight (MKL), where a kernel bound by reading the 151 MB
of weights should cost nearly the same for all; the same product computed weight-stationary,
``addmm(bias[:, None], W, x.T).T``, took 12.1 ms for eight rows on two threads against 22.0.
Which is faster depends on the CPU, the BLAS, the thread count and the batch size, so
``tune_linears`` times both for every fully connected layer at each batch size a batch can
reach (powers of two up to the largest), once when the cloud starts batching, and each layer
then runs a batch of ``n`` rows on the kernel that won for the smallest size at least ``n``.
Results equal ``linear``'s up to float rounding (the same sums in another order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch import nn

from edgesplit.core.splitting import SplitModel

log = logging.getLogger(__name__)

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return nn.functional.linear(x, weight, bias)


def weight_stationary(x: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
    """``linear`` as ``W @ x.T``: the weights stream through once for all rows."""
    if bias is None:
        return torch.mm(weight, x.t()).t()
    return torch.addmm(bias.unsqueeze(1), weight, x.t()).t()


KERNELS: dict[str, Kernel] = {"linear": linear, "weight_stationary": weight_stationary}


class TunedLinear(nn.Linear):
    """An ``nn.Linear`` (the same parameters) that runs each batch size on its chosen kernel;
    inputs other than (rows, features) run as ``linear``."""

    def __init__(self, layer: nn.Linear, choices: dict[int, str]) -> None:
        super().__init__(layer.in_features, layer.out_features, layer.bias is not None,
                         device="meta")
        self.weight, self.bias = layer.weight, layer.bias
        self.choices = dict(sorted(choices.items()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or not self.choices:
            return linear(x, self.weight, self.bias)
        rows = x.shape[0]
        name = next((k for size, k in self.choices.items() if size >= rows),
                    next(reversed(self.choices.values())))
        return KERNELS[name](x, self.weight, self.bias)


def batch_sizes(max_batch_size: int) -> list[int]:
    """The sizes timed: 1, 2, 4, ... and ``max_batch_size`` itself."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


def fastest(layer: nn.Linear, rows: int, repeats: int = 3) -> str:
    """The kernel that ran ``layer`` on ``rows`` rows fastest (best of ``repeats``)."""
    x = torch.randn(rows, layer.in_features, dtype=layer.weight.dtype,
                    device=layer.weight.device)
    best: dict[str, float] = {}
    with torch.inference_mode():
        for name, kernel in KERNELS.items():
            kernel(x, layer.weight, layer.bias)  # warm-up
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                kernel(x, layer.weight, layer.bias)
                times.append(time.perf_counter() - began)
            best[name] = min(times)
    return min(best, key=lambda name: best[name])


def tune_linears(split: SplitModel, max_batch_size: int,
                 choose: Callable[[nn.Linear, int], str] = fastest) -> dict[str, dict[int, str]]:
    """Swap every ``nn.Linear`` that ``split`` calls for a ``TunedLinear`` whose kernel per
    batch size is ``choose(layer, rows)``; returns the choices by layer name."""
    chosen: dict[str, dict[int, str]] = {}
    for name, layer in split.called_modules().items():
        if type(layer) is not nn.Linear:
            continue
        choices = {rows: choose(layer, rows) for rows in batch_sizes(max_batch_size)}
        split.swap_module(name, TunedLinear(layer, choices))
        chosen[name] = choices
    return chosen
