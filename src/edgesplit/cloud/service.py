"""The models a cloud serves and the one operation it performs: check tensors, run a tail."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel, torch_dtype
from edgesplit.errors import UnknownModel, WireFormatError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TailResult:
    output: torch.Tensor
    layer_times_s: list[float]
    compute_s: float
    queue_s: float = 0.0  # from handing the tail to a worker to the worker starting it


class CloudService:
    """The models and the one operation the cloud performs: check the tensors, run the tail."""

    def __init__(self, models: Mapping[str, SplitModel], max_batch: int = 16) -> None:
        self.models = dict(models)
        self.max_batch = max_batch

    @classmethod
    def from_zoo(cls, names: Sequence[str], max_batch: int = 16) -> CloudService:
        models = {}
        for name in names:
            log.info("loading %s", name)
            models[name] = zoo.build_split(name)
        return cls(models, max_batch)

    def split(self, name: str) -> SplitModel:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModel(
                f"model {name!r} is not served here: expected one of {', '.join(self.models)}"
            ) from None

    def max_elements(self, name: str, split_point: int) -> int:
        """The most elements one input tensor may have: the largest cut tensor, full batch."""
        specs = self.split(name).split_points[split_point].tensors
        return max(math.prod(s.shape) for s in specs) * self.max_batch

    def conform(self, name: str, split_point: int, tensors: list[torch.Tensor]) -> list[
            torch.Tensor]:
        """Cast floats to the cut's dtype and refuse NaN, infinity and oversized batches."""
        specs = self.split(name).split_points[split_point].tensors
        out = []
        for spec, tensor in zip(specs, tensors, strict=False):
            expected = torch_dtype(spec.dtype)
            if (tensor.dtype != expected and tensor.is_floating_point()
                    and expected.is_floating_point):
                tensor = tensor.to(expected)
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise WireFormatError(f"{spec.name} contains NaN or infinity")
            if tensor.dim() and tensor.shape[0] > self.max_batch:
                raise WireFormatError(
                    f"batch of {tensor.shape[0]} is over this server's limit of {self.max_batch}")
            out.append(tensor)
        return out

    def run(self, name: str, split_point: int, tensors: list[torch.Tensor]) -> TailResult:
        split = self.split(name)
        tensors = self.conform(name, split_point, tensors)
        timings: list[float] = []
        began = time.perf_counter()
        output = split.tail(tensors, split_point, timings)
        return TailResult(output, timings, time.perf_counter() - began)
