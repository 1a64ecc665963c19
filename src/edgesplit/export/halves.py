"""One side of a cut as a standalone program: ``torch.export`` first, ONNX from that program.

A half is traced through ``SplitModel.run_between`` (the layers the edge or the cloud runs, as
the split runs them), so what is exported is exactly what the split computes, residual forks and
all: a cut that carries two tensors gives a head with two outputs and a tail with two inputs.
The export is non-strict (torch's own tracing of the Python code, no bytecode analysis) and
traces a sample of batch 2, because torch fixes a dimension of size 1 to 1: every dimension that
follows the batch stays free in the program, every other one is the sample's.

A half holds only the weights it uses: ``torch.export`` lifts every parameter of the module it
is given, so the half is traced once to learn which it reads and again over a module that holds
just those (same tensors, same names). ONNX drops unused weights by itself.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind

from edgesplit.core.splitting import SplitModel, TensorSpec
from edgesplit.errors import InvalidSplitPoint, MissingExtra, ModelNotSplittable
from edgesplit.extras import needs_extra

log = logging.getLogger(__name__)

HEAD, TAIL = "head", "tail"
MAX_BATCH = 4096  # the largest batch an exported half accepts (torch.export wants a bound)


class _Half(nn.Module):
    """Layers ``start+1..stop`` of ``split`` as a module whose inputs are the tensors that cross
    cut ``start``; ``holder`` owns the weights that ``torch.export`` is to lift."""

    def __init__(self, split: SplitModel, start: int, stop: int, holder: nn.Module) -> None:
        super().__init__()
        self.model = holder
        self._split, self._start, self._stop = split, start, stop
        self._batched = next((s for s in split.split_points[start].tensors
                              if s.batch_dim is not None), None)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch: Any = 1
        if self._batched is not None:  # the batch from the first batched tensor
            index = self._split.split_points[self._start].tensors.index(self._batched)
            dim = self._batched.batch_dim
            assert dim is not None  # chosen above for it
            batch = tensors[index].shape[dim] // self._batched.shape[dim]
        return self._split.run_between(tensors, self._start, self._stop, batch)


def bounds(split: SplitModel, side: str, split_point: int) -> tuple[int, int]:
    """The cuts a half runs between; InvalidSplitPoint if the split point is not one of the
    model's or the half would have no layers (the head at split point 0, the tail at N)."""
    n = split.n_layers
    if not 0 <= split_point <= n:  # named as such, not as an empty half (it is neither)
        raise InvalidSplitPoint(
            f"split point {split_point} is out of range: the model has {n} layers; export a "
            f"split point from 1 to {n - 1}")
    if split_point == (0 if side == HEAD else n):
        raise InvalidSplitPoint(
            f"split point {split_point} leaves the {side} without layers: export a split point "
            f"from 1 to {n - 1}")
    return (0, split_point) if side == HEAD else (split_point, n)


def onnx_names(split: SplitModel, side: str, split_point: int) -> tuple[list[str], list[str]]:
    """The names of an ONNX half's inputs and its outputs: the split's tensor names after
    ``input.``, ``cut.`` or ``output.`` (a bare name may be taken inside the exported graph)."""
    model_in = [f"input.{t.name}" for t in split.split_points[0].tensors]
    model_out = [f"output.{t.name}" for t in split.outputs]
    cut = (model_out if split_point == split.n_layers else
           [f"cut.{t.name}" for t in split.split_points[split_point].tensors])
    return (model_in, cut) if side == HEAD else (cut, model_out)


def half_inputs(split: SplitModel, sample: torch.Tensor, side: str,
                split_point: int) -> tuple[torch.Tensor, ...]:
    """What a half takes, at batch 2, from the model's sample (one, batch dimension first)."""
    doubled = torch.cat([sample, sample])
    if side == HEAD:
        return (doubled,)
    # Cloned: the split runs in inference mode, whose tensors the exporters' passes refuse.
    return tuple(t.clone() for t in split.head(doubled, split_point))


def export_half(split: SplitModel, sample: torch.Tensor, side: str,
                split_point: int) -> ExportedProgram:
    """The ``torch.export`` program of one half, holding only the weights it uses.

    InvalidSplitPoint for a cut that leaves a half empty; ModelNotSplittable (one line) for a
    half ``torch.export`` cannot trace.
    """
    start, stop = bounds(split, side, split_point)
    inputs = half_inputs(split, sample, side, split_point)
    shapes = (tuple(_dynamic(spec) for spec in split.split_points[start].tensors),)
    try:
        everything = _export(_Half(split, start, stop, split.graph_module()), inputs, shapes)
        used = _used_weights(everything)
        return _export(_Half(split, start, stop, _holder(split.graph_module(), used)), inputs,
                       shapes)
    except Exception as exc:  # torch.export raises many kinds; all mean "cannot export"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotSplittable(f"torch.export cannot export the {side} at split point "
                                 f"{split_point}: {first}") from exc


def onnx_bytes(program: ExportedProgram, input_names: Sequence[str],
               output_names: Sequence[str]) -> bytes:
    """The program as an ONNX model (torch's dynamo exporter, opset 18), weights inside."""
    try:
        with needs_extra("exporting to ONNX"), _quiet_exporter():
            onnx_program = torch.onnx.export(program, dynamo=True,
                                             input_names=list(input_names),
                                             output_names=list(output_names), verbose=False)
        assert onnx_program is not None  # dynamo=True always returns the program
        buffer = io.BytesIO()
        onnx_program.save(buffer)  # type: ignore[arg-type]  # a file-like object is accepted
    except (ModuleNotFoundError, MissingExtra):
        raise
    except Exception as exc:  # the ONNX exporter raises many kinds; all mean "cannot export"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotSplittable(f"the ONNX exporter cannot convert this half: {first}") from exc
    return buffer.getvalue()


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Without the ONNX exporter's notes on stderr: that torchvision's operators are skipped
    (we use none) and torch's own deprecation warnings, on every export."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def _export(module: nn.Module, inputs: tuple[torch.Tensor, ...],
            shapes: tuple[tuple[dict[int, Any] | None, ...]]) -> ExportedProgram:
    with torch.no_grad():
        return torch.export.export(module, inputs, dynamic_shapes=shapes, strict=False)


def _dynamic(spec: TensorSpec) -> dict[int, Any] | None:
    """Which dimension of a tensor follows the batch, as torch.export is told (None: none)."""
    if spec.batch_dim is None or spec.free:
        return None
    batch = Dim("batch", min=1, max=MAX_BATCH)
    unit = spec.shape[spec.batch_dim]
    return {spec.batch_dim: batch if unit == 1 else unit * batch}


def _used_weights(program: ExportedProgram) -> set[str]:
    """The qualified names of the parameters and buffers the program reads."""
    lifted = {InputKind.PARAMETER, InputKind.BUFFER}
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    return {str(spec.target) for spec, node in zip(program.graph_signature.input_specs,
                                                   placeholders, strict=True)
            if spec.kind in lifted and node.users}


def _holder(module: nn.Module, names: set[str]) -> nn.Module:
    """A module that holds only the submodules of ``module`` that own the weights ``names``,
    the same objects at the same paths (empty modules above them): non-strict export swaps the
    weights of the modules it is given, so the modules the split calls must be among them.
    A weight of ``module`` itself keeps all of it."""
    owners = {name.removeprefix("model.").rpartition(".")[0] for name in names}
    if "" in owners:
        return module
    root = nn.Module()
    for path in sorted(owners):
        *parents, leaf = path.split(".")
        holder = root
        for part in parents:
            if not hasattr(holder, part):
                holder.add_module(part, nn.Module())
            holder = getattr(holder, part)
        if not hasattr(holder, leaf):
            holder.add_module(leaf, module.get_submodule(path))
    return root
