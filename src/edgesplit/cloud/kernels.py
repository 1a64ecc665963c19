"""Fully connected layers of batched tails on the fastest of their kernels, chosen by measuring.

On some CPUs torch's ``linear`` costs nearly as much per row at a batch of 2 to 8 as at 1, where
a kernel bound by reading the weights should cost nearly the same for all. On the 2-core AMD
EPYC VM this was built on (two torch threads, MKL 2024.2, oneDNN 3.x), AlexNet's 9216x4096
layer took, for 1, 2, 4 and 8 rows:

- ``linear`` (MKL): 5.3, 11.6, 12.4 and 10.9 ms;
- ``weight_stationary``, ``addmm(bias[:, None], W, x.T).T``: 5.3, 5.5, 9.9 and 12.8 ms;
- ``onednn``, oneDNN's inner product on weights packed once: 4.1, 4.6, 4.7 and 5.6 ms.

Which is fastest depends on the CPU, the libraries, the thread count and the batch size, so
``tune_linears`` times each for every fully connected layer at each batch size a batch can
reach (powers of two up to the largest), once when the cloud starts batching, and each layer
then runs a batch of ``n`` rows on the kernel that won for the smallest size at least ``n``.
Results equal ``linear``'s up to float rounding (the same sums in another order). ``onednn``
is offered for float32 layers on the CPU where torch was built with oneDNN; a layer that
chooses it keeps a packed copy of its weights (AlexNet's three: 235 MB more).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from edgesplit.core.splitting import SplitModel

Kernel = Callable[[torch.Tensor], torch.Tensor]


def kernels(layer: nn.Linear) -> dict[str, Kernel]:
    """The ways to run ``layer`` on a (rows, features) input, by name."""
    weight: torch.Tensor = layer.weight
    bias: torch.Tensor | None = layer.bias

    def linear(x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, weight, bias)

    def weight_stationary(x: torch.Tensor) -> torch.Tensor:
        """``linear`` as ``W @ x.T``: the weights stream through once for all rows."""
        if bias is None:
            return torch.mm(weight, x.t()).t()
        return torch.addmm(bias.unsqueeze(1), weight, x.t()).t()

    found: dict[str, Kernel] = {"linear": linear, "weight_stationary": weight_stationary}
    if weight.device.type == "cpu" and weight.dtype == torch.float32:
        try:  # the weights packed once into oneDNN's layout, where torch was built with it
            packed = weight.detach().to_mkldnn()
            packed_bias = None if bias is None else bias.detach().to_mkldnn()
        except RuntimeError:
            return found

        def onednn(x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = torch.ops.aten.mkldnn_linear(x.to_mkldnn(), packed, packed_bias)
            return out.to_dense()

        found["onednn"] = onednn
    return found


class TunedLinear(nn.Linear):
    """An ``nn.Linear`` (the same parameters) that runs each batch size on its chosen kernel;
    inputs that are not (rows, features) matrices of the layer's dtype run as ``linear``."""

    def __init__(self, layer: nn.Linear, choices: dict[int, str],
                 found: dict[str, Kernel] | None = None) -> None:
        super().__init__(layer.in_features, layer.out_features, layer.bias is not None,
                         device="meta")
        self.weight, self.bias = layer.weight, layer.bias
        self.choices = dict(sorted(choices.items()))
        found = found if found is not None else kernels(layer)
        # Only the chosen kernels stay (a packed copy of the weights costs memory), and in a
        # plain dict, so that they are not submodules: the parameters stay the layer's own.
        self._kernels = {name: found[name] for name in set(self.choices.values())}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or not self.choices or x.dtype != self.weight.dtype:
            return nn.functional.linear(x, self.weight, self.bias)
        rows = x.shape[0]
        name = next((k for size, k in self.choices.items() if size >= rows),
                    next(reversed(self.choices.values())))
        return self._kernels[name](x.contiguous())


def batch_sizes(max_batch_size: int) -> list[int]:
    """The sizes timed: 1, 2, 4, ... and ``max_batch_size`` itself."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


def fastest(layer: nn.Linear, rows: int, found: dict[str, Kernel], repeats: int = 3) -> str:
    """The kernel of ``found`` that ran ``layer`` on ``rows`` rows fastest (best of
    ``repeats``)."""
    x = torch.randn(rows, layer.in_features, dtype=layer.weight.dtype,
                    device=layer.weight.device)
    best: dict[str, float] = {}
    with torch.inference_mode():
        for name, kernel in found.items():
            kernel(x)  # warm-up
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                kernel(x)
                times.append(time.perf_counter() - began)
            best[name] = min(times)
    return min(best, key=lambda name: best[name])


Choose = Callable[[nn.Linear, int, dict[str, Kernel]], str]


def tune_linears(split: SplitModel, max_batch_size: int,
                 choose: Choose = fastest) -> dict[str, dict[int, str]]:
    """Swap every ``nn.Linear`` that ``split`` calls for a ``TunedLinear`` whose kernel per
    batch size is ``choose(layer, rows, kernels)``; returns the choices by layer name."""
    chosen: dict[str, dict[int, str]] = {}
    for name, layer in split.called_modules().items():
        if type(layer) is not nn.Linear:
            continue
        found = kernels(layer)
        choices = {rows: choose(layer, rows, found) for rows in batch_sizes(max_batch_size)}
        split.swap_module(name, TunedLinear(layer, choices, found))
        chosen[name] = choices
    return chosen
