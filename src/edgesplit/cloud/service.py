"""The models a cloud serves and the one operation it performs: check tensors, run a tail."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from edgesplit.cloud.device import check_device
from edgesplit.cloud.errors import NotFinite
from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel, torch_dtype
from edgesplit.errors import InvalidArgument, ModelVersionMismatch, UnknownModel, WireFormatError
from edgesplit.models.digest import model_digest
from edgesplit.models.names import is_zoo
from edgesplit.models.sources import load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TailResult:
    outputs: tuple[torch.Tensor, ...]  # flat, in the order of the model's ``outputs``
    layer_times_s: list[float]
    compute_s: float
    queue_s: float = 0.0  # from handing the tail to a worker to the worker starting it
    batch_size: int = 1  # requests that ran together in this tail
    load: dict[str, Any] = field(default_factory=dict)  # the cloud's load when it finished


class CloudService:
    """The models and the one operation the cloud performs: check the tensors, run the tail.

    On a GPU (``device``) the models' weights live there, each request's tensors go there
    after their checks, and outputs come back to the CPU once the device has finished (so
    ``compute_s`` is the device's real time; per-layer times are when each layer was queued).
    """

    def __init__(self, models: Mapping[str, SplitModel], max_batch: int = 16,
                 device: str = "cpu") -> None:
        self.models = dict(models)
        self.max_batch = max_batch
        self.device = torch.device(check_device(device))
        # Taken now, before any kernel is swapped in (that changes the submodules, not the
        # answers): the digest an edge holding the same model sends with each offload.
        self.digests = {name: model_digest(split) for name, split in self.models.items()}

    @classmethod
    def from_zoo(cls, names: Sequence[str], max_batch: int = 16,
                 device: str = "cpu") -> CloudService:
        """The service of ``names``: zoo names, and sources of one's own (``.pt2`` program
        files, ``package.module:factory``; see ``edgesplit.models.sources``), each served
        under its name."""
        target = torch.device(check_device(device))
        models = {}
        for name in names:
            log.info("loading %s on %s", name, target)
            if not is_zoo(name):
                loaded = load_model(name)
                if target.type != "cpu":
                    raise InvalidArgument(f"{name}: models of one's own are served on the CPU "
                                          "only (--device cpu)")
                models[loaded.name] = loaded.split
                continue
            models[name] = (zoo.build_split(name) if target.type == "cpu" else
                            SplitModel(zoo.build_model(name).to(target),
                                       zoo.sample_input(name).to(target)))
        return cls(models, max_batch, device)

    def split(self, name: str) -> SplitModel:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModel(
                f"model {name!r} is not served here: expected one of {', '.join(self.models)}"
            ) from None

    def check_digest(self, name: str, digest: object) -> None:
        """Refuse (``ModelVersionMismatch``, 409) a request whose ``model_digest`` parameter
        names another version of ``name`` than the one served; a request without one is not
        checked (a plain OIP client)."""
        if digest is None:
            return
        served = self.digests.get(name)
        if served is None:  # a model put in ``models`` after the service was made
            served = self.digests[name] = model_digest(self.split(name))
        if digest != served:
            raise ModelVersionMismatch(
                f"the edge's {name} ({str(digest)[:19]}...) is not the version served here "
                f"({served[:19]}...): serve the same model file on both sides")

    def max_elements(self, name: str, split_point: int) -> int:
        """The most elements one input tensor may have: the largest cut tensor, full batch."""
        specs = self.split(name).split_points[split_point].tensors
        return max(s.max_elements(self.max_batch) for s in specs)

    def conform(self, name: str, split_point: int, tensors: list[torch.Tensor]) -> list[
            torch.Tensor]:
        """Cast floats to the cut's dtype and refuse tensors that are not what crosses the cut,
        oversized batches (tensors without a batch dimension have none), NaN, and a model input
        (split point 0) with infinity. Between layers, infinities are activations (a masked
        attention's -inf before its softmax) and pass; the final outputs are checked after."""
        split = self.split(name)
        specs = split.split_points[split_point].tensors
        out = []
        for spec, tensor in zip(specs, tensors, strict=False):
            expected = torch_dtype(spec.dtype)
            if (tensor.dtype != expected and tensor.is_floating_point()
                    and expected.is_floating_point):
                tensor = tensor.to(expected)
            if tensor.is_floating_point() and bool(torch.isnan(tensor).any()):
                raise WireFormatError(f"{spec.name} contains NaN")
            if (split_point == 0 and tensor.is_floating_point()
                    and not bool(torch.isfinite(tensor).all())):
                raise WireFormatError(f"the model's input {spec.name} contains infinity")
            out.append(tensor)
        batch = split.check_tensors(out, split_point)
        if batch > self.max_batch:
            raise WireFormatError(f"a batch of {batch} rows is over this server's limit (max "
                                  f"{self.max_batch} rows)")
        return [tensor.to(self.device) for tensor in out]

    def to_host(self, outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The tail's outputs on the CPU, once the device has finished computing them."""
        if self.device.type == "cpu":
            return outputs
        torch.cuda.synchronize(self.device)
        return tuple(t.cpu() for t in outputs)

    def run(self, name: str, split_point: int, tensors: list[torch.Tensor]) -> TailResult:
        split = self.split(name)
        tensors = self.conform(name, split_point, tensors)
        timings: list[float] = []
        began = time.perf_counter()
        try:
            outputs = self.to_host(split.tail_outputs(tensors, split_point, timings))
        except (RuntimeError, IndexError, ValueError) as exc:
            # Well-formed tensors the model still cannot take (say token ids out of range).
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise WireFormatError(f"{name} cannot run on these tensors at split point "
                                  f"{split_point}: {type(exc).__name__}: {first}") from exc
        self.check_finite(name, split_point, outputs)
        return TailResult(outputs, timings, time.perf_counter() - began)

    def check_finite(self, name: str, split_point: int, outputs: tuple[torch.Tensor, ...]
                     ) -> None:
        """Refuse to answer NaN or infinity: finite inputs can still overflow (3e38 at the
        input), and what the cloud sends must be a number."""
        for spec, tensor in zip(self.split(name).outputs, outputs, strict=False):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                what = "NaN" if bool(torch.isnan(tensor).any()) else "infinity"
                raise NotFinite(
                    f"{name}'s output {spec.name!r} from split point {split_point} holds "
                    f"{what}: the input's values overflow the model; send values in the range "
                    "it was trained on")
