"""What runs the edge's layers: torch (the split itself), or ONNX Runtime.

``OnnxRuntimeEngine`` exports the head of a split point to ONNX (``edgesplit.export``) the first
time a plan chooses that split point, keeps the session, and runs the head with it. It exports
on demand rather than ahead of time, so the planner keeps every split point (ahead of time would
be N exports, a minute for ResNet-18, before the first inference) and an edge pays only for the
cuts it uses; ``prepare`` is called outside the timed part of an inference, so an export never
counts as head time. What ONNX Runtime cannot run is refused once, in one line, at that split
point's first use. The tail after a fallback (cloud lost mid-inference) runs in torch.

ONNX Runtime times its head as a whole; the time is spread over the head's layers in the
proportions of the profile's layer times, so the predictor learns the engine's speed per layer.
``onnxruntime`` and ``onnxscript`` come with the ``onnx`` extra and are imported when the engine
is built.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from edgesplit.core.splitting import SplitModel
from edgesplit.errors import InvalidArgument
from edgesplit.extras import needs_extra

ENGINES = ("torch", "onnxruntime")


class Engine(Protocol):
    """Runs layers ``1..split_point`` on the edge."""

    name: str

    def prepare(self, split_point: int) -> None:
        """Get ready to run the head at ``split_point`` (not part of any timing)."""

    def head(self, x: torch.Tensor, split_point: int,
             timings: list[float] | None = None) -> tuple[torch.Tensor, ...]:
        """What crosses the cut at ``split_point``; each layer's seconds appended to
        ``timings``."""

    def run(self, x: torch.Tensor, timings: list[float] | None = None) -> Any:
        """The whole model on the edge: its output structure."""


class TorchEngine:
    """The split's own layer-by-layer run."""

    name = "torch"

    def __init__(self, split: SplitModel) -> None:
        self.split = split

    def prepare(self, split_point: int) -> None:
        pass  # nothing to build

    def head(self, x: torch.Tensor, split_point: int,
             timings: list[float] | None = None) -> tuple[torch.Tensor, ...]:
        return self.split.head(x, split_point, timings)

    def run(self, x: torch.Tensor, timings: list[float] | None = None) -> Any:
        return self.split(x, timings)


class OnnxRuntimeEngine:
    """Each head an ONNX Runtime session, exported from the split at its first use."""

    name = "onnxruntime"

    def __init__(self, split: SplitModel, sample: torch.Tensor, *,
                 layer_times: Sequence[float] | None = None, threads: int | None = None) -> None:
        with needs_extra("the onnxruntime engine"):
            import onnxruntime
            import onnxscript  # noqa: F401  # torch's ONNX exporter needs it: fail now, not later
        self.split, self._sample = split, sample
        self._ort = onnxruntime
        self._weights = list(layer_times) if layer_times else [1.0] * split.n_layers
        self._threads = threads or torch.get_num_threads()
        self._sessions: dict[int, Any] = {}

    def prepare(self, split_point: int) -> None:
        self._session(split_point)

    def head(self, x: torch.Tensor, split_point: int,
             timings: list[float] | None = None) -> tuple[torch.Tensor, ...]:
        if split_point == 0:  # no layers: the input is what crosses
            self.split.check_tensors((x,), 0)
            return (x,)
        session = self._session(split_point)
        self.split.check_tensors((x,), 0)
        began = time.perf_counter()
        outputs = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        elapsed = time.perf_counter() - began
        if timings is not None:
            timings.extend(self._spread(elapsed, split_point))
        return tuple(torch.from_numpy(o) for o in outputs)

    def run(self, x: torch.Tensor, timings: list[float] | None = None) -> Any:
        return self.split.pack_outputs(self.head(x, self.split.n_layers, timings))

    def _spread(self, elapsed: float, split_point: int) -> list[float]:
        weights = self._weights[:split_point]
        total = sum(weights)
        if total <= 0:
            return [elapsed / split_point] * split_point
        return [elapsed * w / total for w in weights]

    def _session(self, split_point: int) -> Any:
        if split_point not in self._sessions:
            from edgesplit.export.halves import HEAD, export_half, onnx_bytes, onnx_names

            self.split.check_split_point(split_point)
            program = export_half(self.split, self._sample, HEAD, split_point)
            model = onnx_bytes(program, *onnx_names(self.split, HEAD, split_point))
            options = self._ort.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            self._sessions[split_point] = self._ort.InferenceSession(
                model, options, providers=["CPUExecutionProvider"])
        return self._sessions[split_point]


def build_engine(name: str, split: SplitModel, sample: torch.Tensor | None,
                 layer_times: Sequence[float] | None = None) -> Engine:
    """The engine called ``name`` for ``split`` (``sample``: one input, for the exports; torch
    needs none)."""
    if name == "torch":
        return TorchEngine(split)
    if name == "onnxruntime":
        if sample is None:
            raise InvalidArgument("the onnxruntime engine needs the model's sample input to "
                                  "export its heads with")
        return OnnxRuntimeEngine(split, sample, layer_times=layer_times)
    raise InvalidArgument(f"unknown engine {name!r}: expected one of {', '.join(ENGINES)}")
