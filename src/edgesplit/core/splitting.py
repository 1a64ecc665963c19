"""Turn any ``torch.nn.Module`` into an ordered list of split points, without touching ``forward``.

The module is copied (the caller's stays as it was) and traced with ``torch.fx``. Every node that
computes from the input's *data* is part of a *layer*; the layers in the graph's topological order
are numbered ``1..N`` and a split point ``sp`` is the cut after layer ``sp`` (``0`` sends the raw
input; ``N`` runs every layer on the edge and leaves the cloud nothing but the final outputs, as
in the thesis, where results land in the cloud). What crosses a cut is the set of *live* tensors:
computed at or before the cut and used after it. For a chain that is one tensor; after a residual
fork it is two.

Some nodes are not layers:

- Dropout and Identity are removed (identities at inference, as in the thesis);
- parameter-free reshapes (``flatten``, ``view``, ``reshape``, ...) travel with the layer after
  them, so AlexNet's cut after the average pool sends 256x6x6;
- values that do not depend on the input's data are *derived*, never sent: parameters, buffers,
  constants, optional arguments left at their defaults, shape queries (``x.size(0)``,
  ``x.shape``) and whatever is computed from them only (``torch.arange(ids.size(1))``, an LSTM's
  zero state). Each side recomputes them; a shape query from the batch size of what crosses the
  cut, since every other dimension is fixed by the sample.

A cut is not offered (the layers on both sides run as one, and ``unsplittable`` says why) when it
would carry anything but tensors, a tensor whose shape does not follow the batch, a dtype the Open
Inference Protocol has no datatype for (complex, quint8; bfloat16 travels as BF16), views of one
tensor that a later in-place operation would tell apart, or no batched tensor while the rest needs
the batch size. Every tensor's batch dimension is learned by running the sample at batch 1 and 2
(the second sample reversed, so that a count taken from the data does not simply double); a model
that cannot run at batch 2 takes batch 1 only. A shape set by the data (``h[mask]``, ``nonzero``,
``masked_select``, ``unique``, a slice by ``.item()``) is found by running the sample once more
with those values grown by a row: whatever changes with them does not follow the batch, so no cut
carries it and a size query on it reads the real tensor. An output whose shape follows neither
(``.squeeze()`` at batch 1, B x B logits) is *free*: only its dtype is checked.

What torch.fx cannot trace is refused in one line that quotes the user's source line and names the
submodule to pass in ``leaf_modules``; a node that fails on the sample is named with its line.

>>> import torch
>>> from edgesplit.core.splitting import SplitModel
>>> from edgesplit.core.zoo import build_model, sample_input
>>> x = sample_input("resnet18")
>>> split = SplitModel(build_model("resnet18"), x)
>>> sent = split.head(x, 20)            # the edge runs layers 1..20
>>> out = split.tail(sent, 20)          # the cloud runs the rest
>>> torch.equal(out, split(x))
True
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import math
import operator
import os
import re
import time
import traceback
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx.node import map_aggregate, map_arg

from edgesplit.errors import (
    InvalidArgument,
    InvalidSplitPoint,
    ModelNotSplittable,
    WireFormatError,
)
from edgesplit.wire.codecs import can_travel

log = logging.getLogger(__name__)

_REMOVED_MODULES = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout, nn.Identity,
)
_REMOVED_FUNCTIONS = {torch.nn.functional.dropout, torch.dropout}
_PASSIVE_MODULES = (nn.Flatten, nn.Unflatten)
_PASSIVE_FUNCTIONS = {
    torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.t, torch.transpose,
    torch.permute, operator.getitem, getattr, len,
}
_PASSIVE_METHODS = {
    "view", "reshape", "flatten", "squeeze", "unsqueeze", "size", "dim", "contiguous",
    "view_as", "reshape_as", "permute", "transpose", "t", "expand", "expand_as",
}
# Queries of a tensor's shape (recomputed from a stand-in of the right shape, never sent) and of
# what never changes (taken from the sample).
_SHAPE_METHODS = {"size", "dim", "numel", "nelement", "ndimension"}
_SHAPE_ATTRIBUTES = {"shape", "ndim"}
_STATIC_METHODS = {"is_floating_point", "is_complex"}
_STATIC_ATTRIBUTES = {"dtype", "device", "is_cuda", "layout"}
_IN_PLACE_FUNCTIONS = {
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
    operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.ilshift,
    operator.irshift, operator.imatmul, operator.setitem,
}
_IRREGULAR = -1  # a tensor whose shape does not follow the batch


@dataclass(frozen=True)
class TensorSpec:
    """Shape (at batch 1) and dtype of one tensor that crosses a cut or leaves the model.

    ``batch_dim`` is the dimension that grows with the batch (``shape[batch_dim] * batch``),
    None for a tensor whose shape does not depend on the batch. A ``free`` tensor's shape
    follows neither (a squeezed classifier output, B x B similarity logits, rows picked by a
    mask): only its dtype is checked, and ``shape`` is the sample's. Only outputs are free: no
    cut that would carry such a tensor is offered.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    batch_dim: int | None = 0
    free: bool = False

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * torch_dtype(self.dtype).itemsize

    @property
    def open_shape(self) -> list[int]:
        """The shape with -1 where it follows the batch (everywhere for a free tensor), as OIP
        metadata writes it."""
        return [-1 if d == self.batch_dim or self.free else size
                for d, size in enumerate(self.shape)]

    def max_elements(self, batch: int) -> int:
        """The most elements this tensor has at ``batch``: a free one is allowed four times the
        sample's per squared batch (B x B logits grow so), at least one."""
        if self.free:
            return max(math.prod(self.shape), 1) * 4 * batch * batch
        return math.prod(self.batched_shape(batch))

    def batched_shape(self, batch: int) -> tuple[int, ...]:
        if self.batch_dim is None:
            return self.shape
        shape = list(self.shape)
        shape[self.batch_dim] *= batch
        return tuple(shape)

    def batch_of(self, tensor: object, where: str) -> int | None:
        """The batch size ``tensor`` has as this spec (None: unbatched); else WireFormatError."""
        if not isinstance(tensor, torch.Tensor):
            raise WireFormatError(f"{self.name}: expected a tensor, got {type(tensor).__name__}")
        if dtype_name(tensor.dtype) != self.dtype:
            raise WireFormatError(f"{self.name} {where}: expected dtype {self.dtype}, "
                                  f"got {dtype_name(tensor.dtype)}")
        if self.free:
            return None
        batch = None
        if self.batch_dim is not None and tensor.dim() == len(self.shape):
            size, unit = tensor.shape[self.batch_dim], self.shape[self.batch_dim]
            batch = size // unit if size >= unit and size % unit == 0 else 0
        if tensor.dim() != len(self.shape) or batch == 0 or tuple(
                tensor.shape) != self.batched_shape(batch or 1):
            any_batch = {None: "", 0: " (any batch size)"}.get(
                self.batch_dim, f" (any batch size in dimension {self.batch_dim})")
            raise WireFormatError(f"{self.name} {where}: expected shape {list(self.shape)}"
                                  f"{any_batch}, got {list(tensor.shape)}")
        return batch


@dataclass(frozen=True)
class Layer:
    """One layer: its 1-based position, qualified name and type."""

    index: int
    name: str
    type: str


@dataclass(frozen=True)
class SplitPoint:
    """What a cut after layer ``split_point`` sends: the live tensors and their size in bytes."""

    split_point: int
    layer: str  # the last layer the edge runs ("input" for split point 0)
    layer_type: str
    tensors: tuple[TensorSpec, ...]

    @property
    def offload_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def torch_dtype(name: str) -> torch.dtype:
    """``"float32"`` to ``torch.float32``; anything else that is not a dtype raises."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise WireFormatError(f"unknown dtype {name!r}: expected a torch dtype such as 'float32'")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _Tracer(fx.Tracer):
    # Buffers are graph values, as parameters are: nanoGPT's ``bias[:, :, :T, :T]`` slices a
    # buffer by a size known only when the graph runs.
    proxy_buffer_attributes = True

    def __init__(self, leaf_modules: tuple[type[nn.Module], ...], record: bool = False) -> None:
        super().__init__()
        self._extra_leaves = leaf_modules
        # Each node keeps the user's source line that made it. Only to explain a refusal: the
        # first stack capture in a process costs seconds.
        self.record_stack_traces = record

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self._extra_leaves) or super().is_leaf_module(m, qualname)


class _NodeFailed(Exception):
    """A node of the traced graph raised on the sample (the message names the node)."""

    def __init__(self, node: fx.Node, exc: BaseException) -> None:
        super().__init__(f"at {node.name}: {_first_line(exc)}")
        self.node = node.name
        self.error = _first_line(exc)


@dataclass
class _Step:
    nodes: list[fx.Node]  # passive nodes first, the layer node last
    layer: Layer


class SplitModel:
    """A model cut into layers ``1..N``; ``head`` and ``tail`` run either side of a split point.

    ``module`` is copied and put in eval mode: the caller's module is not changed, and changing it
    later does not change the split. ``sample_input`` (one sample, batch dimension first) is run
    once to learn what crosses each cut. ``forward`` takes that one tensor; further arguments
    must have defaults and stay at them. It may return a tensor, or tensors in a tuple, list or
    dict (``outputs`` names them). ``leaf_modules`` lists module types to keep whole (for parts
    torch.fx cannot trace). ``take=True`` hands the module over instead of copying it (the zoo's
    freshly built, memory-mapped models): the caller must not use or change it afterwards.
    """

    def __init__(
        self,
        module: nn.Module,
        sample_input: torch.Tensor,
        *,
        leaf_modules: Iterable[type[nn.Module]] = (),
        take: bool = False,
    ) -> None:
        module = module.eval() if take and isinstance(module, nn.Module) else _private_copy(
            module)
        self._name = type(module).__name__
        leaves = tuple(leaf_modules)
        self._gm = fx.GraphModule(module, _trace(module, leaves))
        self._retrace: Callable[[], fx.Graph] = functools.partial(_trace, module, leaves,
                                                                  record=True)
        self._modules = dict(self._gm.named_modules())
        _remove_identities(self._gm.graph, self._modules)
        _inline_named_tuples(self._gm.graph)
        nodes = list(self._gm.graph.nodes)
        self._order = {node: i for i, node in enumerate(nodes)}
        self._input = nodes[0]
        self._output = next(n for n in nodes if n.op == "output")
        self._output_leaves: list[fx.Node] = []
        map_arg(self._output.args[0], self._output_leaves.append)
        sample = _one_sample(sample_input)
        with torch.inference_mode():
            values = self._sample_values(sample)
            batch_dims = self._batch_dims(sample, values)
        self._derived, self._queries = _classify(nodes, self._input, batch_dims, self._modules)
        self._specs = {n: _spec(n.name, v, batch_dims[n]) for n, v in values.items()
                       if isinstance(v, torch.Tensor)}
        self._frozen = {n: values[n] for n in self._queries if _static_query(n)}
        self.outputs: tuple[TensorSpec, ...] = self._output_specs(values, batch_dims)
        self._segments: dict[tuple[int, int], list[fx.Node]] = {}
        steps = self._group_steps(values)
        self._steps, self._live, notes = self._valid_cuts(steps, values, batch_dims)
        self.unsplittable: tuple[str, ...] = tuple(notes)
        for note in notes:
            log.info("%s: %s", self._name, note)
        self.layers: tuple[Layer, ...] = tuple(
            Layer(i, s.layer.name, s.layer.type) for i, s in enumerate(self._steps, 1)
        )
        self.split_points: tuple[SplitPoint, ...] = tuple(
            SplitPoint(
                sp,
                "input" if sp == 0 else self.layers[sp - 1].name,
                "Input" if sp == 0 else self.layers[sp - 1].type,
                tuple(self._specs[n] for n in live),
            )
            for sp, live in enumerate(self._live)
        )
        self._release = _release_plan(self._steps, self._output, self._derived)

    @property
    def n_layers(self) -> int:
        return len(self._steps)

    def graph_module(self) -> fx.GraphModule:
        """The split graph as it runs, with its submodules and tensors: to read (a model's
        digest hashes it), never to change."""
        return self._gm

    def called_modules(self) -> dict[str, nn.Module]:
        """The submodules the graph calls, by qualified name."""
        targets = {str(n.target) for n in self._gm.graph.nodes if n.op == "call_module"}
        return {name: self._modules[name] for name in sorted(targets)}

    def swap_module(self, name: str, module: nn.Module) -> None:
        """Call ``module`` wherever the graph calls submodule ``name``: the same computation by
        other means (``cloud.kernels`` swaps fully connected layers for tuned ones)."""
        if name not in self.called_modules():
            raise InvalidArgument(f"{name!r} is not a submodule this graph calls")
        parent, _, attribute = name.rpartition(".")
        setattr(self._gm.get_submodule(parent) if parent else self._gm, attribute, module)
        self._modules[name] = module

    def head(self, x: torch.Tensor, split_point: int,
             timings: list[float] | None = None) -> tuple[torch.Tensor, ...]:
        """Run layers ``1..split_point`` on ``x``; return the tensors that cross the cut.

        With ``timings`` given, the time of each layer run is appended to it (seconds).
        """
        self.check_split_point(split_point)
        batch = self.check_tensors((x,), 0)
        env = self._run({self._input: x}, 0, split_point, batch, timings)
        return tuple(env[n] for n in self._live[split_point])

    def tail(self, tensors: torch.Tensor | Sequence[torch.Tensor], split_point: int,
             timings: list[float] | None = None) -> Any:
        """Run layers ``split_point+1..N`` on what ``head`` sent; return the model's output
        (a tensor, or the tuple, list or dict of tensors the model returns)."""
        return self.pack_outputs(self.tail_outputs(tensors, split_point, timings))

    def tail_outputs(self, tensors: torch.Tensor | Sequence[torch.Tensor], split_point: int,
                     timings: list[float] | None = None) -> tuple[torch.Tensor, ...]:
        """As ``tail``, but the outputs as a flat tuple in the order of ``outputs``."""
        self.check_split_point(split_point)
        if isinstance(tensors, torch.Tensor):
            tensors = (tensors,)
        batch = self.check_tensors(tensors, split_point)
        env = self._run(dict(zip(self._live[split_point], tensors, strict=True)),
                        split_point, self.n_layers, batch, timings)
        return tuple(env[n] for n in self._output_leaves)

    def run_between(self, tensors: Sequence[torch.Tensor], start: int, stop: int,
                    batch: Any) -> tuple[torch.Tensor, ...]:
        """Layers ``start+1..stop`` on what crosses cut ``start``, with no checks: what crosses
        cut ``stop`` (the flat outputs at ``N``). For tracing (``torch.export``), where the
        checks' comparisons would fix ``batch`` (an int, or torch's symbolic one) to the
        sample's."""
        env = self._run(dict(zip(self._live[start], tensors, strict=True)), start, stop, batch,
                        None)
        return tuple(env[n] for n in (
            self._output_leaves if stop == self.n_layers else self._live[stop]))

    def __call__(self, x: torch.Tensor, timings: list[float] | None = None) -> Any:
        """The whole model, layer by layer (equal to the original module's output)."""
        return self.tail(self.head(x, self.n_layers, timings), self.n_layers)

    def pack_outputs(self, tensors: Sequence[torch.Tensor]) -> Any:
        """The model's output structure from its flat output tensors (``outputs`` order)."""
        if len(tensors) != len(self.outputs):
            raise WireFormatError(f"the model has {len(self.outputs)} output(s), got "
                                  f"{len(tensors)}")
        remaining = iter(tensors)
        return _rebuild(self._output.args[0], lambda _: next(remaining))

    def output_tensors(self, output: Any) -> tuple[torch.Tensor, ...]:
        """The flat tensors of an output structure, in the order of ``outputs``."""
        return output_tensors(output)

    def check_outputs(self, tensors: Sequence[torch.Tensor]) -> int:
        """The batch size of a flat output, or ``WireFormatError`` unless it fits ``outputs``."""
        return _check_all(self.outputs, tensors, "the model's output")

    def check_tensors(self, tensors: Sequence[torch.Tensor], split_point: int) -> int:
        """The batch size of ``tensors`` if they are what crosses ``split_point``; else raise
        ``WireFormatError``. The batch may differ from the sample's; every other dimension must
        match, and every batched tensor must have the same batch."""
        return _check_all(self.split_points[split_point].tensors, tensors,
                          f"split point {split_point}")

    def check_split_point(self, split_point: object) -> int:
        """``split_point`` if it is an integer from 0 to N; else ``InvalidSplitPoint``."""
        if (not isinstance(split_point, int) or isinstance(split_point, bool)
                or not 0 <= split_point <= self.n_layers):
            raise InvalidSplitPoint(
                f"split point {split_point!r} is out of range: expected an integer "
                f"from 0 to {self.n_layers}"
            )
        return split_point

    def _run(self, env: dict[fx.Node, Any], start: int, stop: int, batch: int,
             timings: list[float] | None) -> dict[fx.Node, Any]:
        clock = time.perf_counter
        with torch.inference_mode():
            began = clock()
            for node in self._segment(start, stop):
                env[node] = self._recompute(node, env, batch)
            carried = clock() - began  # counted in the first layer's time
            for index in range(start, stop):
                began = clock()
                for node in self._steps[index].nodes:
                    env[node] = self._execute(node, env)
                for node in self._release[index]:
                    env.pop(node, None)
                if timings is not None:
                    timings.append(clock() - began + carried)
                    carried = 0.0
        return env

    def _segment(self, start: int, stop: int) -> list[fx.Node]:
        """The derived nodes that layers ``start+1..stop`` (and the output at the end) need."""
        key = (start, stop)
        if key not in self._segments:
            users = [n for step in self._steps[start:stop] for n in step.nodes]
            self._segments[key] = self._needed(users + ([self._output] if stop == len(
                self._steps) else []))
        return self._segments[key]

    def _needed(self, users: Iterable[fx.Node]) -> list[fx.Node]:
        stack = [a for node in users for a in node.all_input_nodes if a in self._derived]
        found: set[fx.Node] = set()
        while stack:
            node = stack.pop()
            if node not in found:
                found.add(node)
                if node not in self._queries:
                    stack.extend(a for a in node.all_input_nodes if a in self._derived)
        return sorted(found, key=self._order.__getitem__)

    def _recompute(self, node: fx.Node, env: dict[fx.Node, Any], batch: int) -> Any:
        if node in self._frozen:
            return self._frozen[node]
        if node in self._queries:
            source = node.all_input_nodes[0]
            spec = self._specs[source]
            stand_in = torch.empty(spec.batched_shape(batch), dtype=torch_dtype(spec.dtype),
                                   device="meta")
            return self._execute(node, {source: stand_in})
        return self._execute(node, env)

    def _execute(self, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
        args = map_arg(node.args, env.__getitem__)
        kwargs = map_arg(node.kwargs, env.__getitem__)
        if node.op == "call_module":
            return self._modules[str(node.target)](*args, **kwargs)
        if node.op == "call_function":
            function = node.target
            assert callable(function)  # fx: a call_function's target is the function itself
            return function(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        if node.op == "get_attr":
            value: Any = self._gm
            for part in str(node.target).split("."):
                value = getattr(value, part)
            return value
        if node.op == "placeholder":  # an optional argument, at its default
            return args[0] if args else None
        raise ModelNotSplittable(f"unexpected fx node {node.op} {node.name}")

    def _run_all(self, x: torch.Tensor,
                 perturbed: Container[fx.Node] = ()) -> dict[fx.Node, Any]:
        """Every node's value on ``x``; the ``perturbed`` nodes' values each grown by a row (or
        an integer moved by one) as other data would make them."""
        values: dict[fx.Node, Any] = {self._input: x}
        for node in self._gm.graph.nodes:
            if node is not self._input and node.op != "output":
                try:
                    values[node] = self._execute(node, values)
                except Exception as exc:  # the user's model may raise anything
                    raise _NodeFailed(node, exc) from exc
                if node in perturbed:
                    values[node] = map_aggregate(values[node], _grown)
        return values

    def _run_doubled(self, sample: torch.Tensor) -> dict[fx.Node, Any]:
        """Every value at batch 2 (empty if the model cannot run at batch 2). For real: the
        meta device would save the compute but costs more in importing its kernels.

        The second sample is the first reversed along every other dimension (its values stay
        valid, token ids included), so that a count taken from the data (rows a mask picks)
        does not double with the batch; a model that cannot take it gets the sample twice."""
        variant = sample.flip(list(range(1, sample.dim()))) if sample.dim() > 1 else sample
        for second in (variant, sample):
            try:
                return self._run_all(torch.cat([sample, second]))
            except _NodeFailed:
                continue
        log.info("%s cannot run at batch 2: it takes batch 1 only", self._name)
        return {}

    def _data_shaped(self, sample: torch.Tensor, values: dict[fx.Node, Any]) -> set[fx.Node]:
        """The nodes whose shape (or, for a Python number, value) depends on the input's data:
        what an operation like ``h[mask]`` or ``nonzero`` makes, and everything whose shape
        follows it. Found by running the sample again with those outputs grown by one row: what
        changes follows them. If the model cannot take that, everything computed from them."""
        sources = {n for n in values if _makes_data_shape(n, values)}
        if not sources:
            return set()
        try:
            grown = self._run_all(sample, sources)
        except _NodeFailed:
            return _descendants(sources)
        return sources | {n for n, v in values.items() if _signature(v) != _signature(grown[n])}

    def _sample_values(self, sample: torch.Tensor) -> dict[fx.Node, Any]:
        try:
            return self._run_all(sample)
        except _NodeFailed as exc:
            # Traced again, recording each node's source line, to say where it failed.
            node = next((n for n in self._retrace().nodes if n.name == exc.node), None)
            raise ModelNotSplittable(
                f"{self._name} fails on the sample input of shape {list(sample.shape)} and "
                f"dtype {dtype_name(sample.dtype)} at {exc.node}"
                f"{_source_of(node) if node else ''}: {exc.error}; pass one input the model "
                "accepts") from None

    def _batch_dims(self, sample: torch.Tensor,
                    values: dict[fx.Node, Any]) -> dict[fx.Node, int | None]:
        """Each tensor's batch dimension, from a run at batch 2 (None for all if it fails);
        irregular for one whose shape depends on the data."""
        doubled = self._run_doubled(sample)
        data_shaped = self._data_shaped(sample, values)
        return {node: _IRREGULAR if node in data_shaped else
                _batch_dim(value, doubled.get(node)) if doubled else None
                for node, value in values.items() if isinstance(value, torch.Tensor)}

    def _output_specs(self, values: dict[fx.Node, Any],
                      batch_dims: dict[fx.Node, int | None]) -> tuple[TensorSpec, ...]:
        names = _output_names(self._output.args[0], len(self._output_leaves))
        for node in [self._input, *self._output_leaves]:
            what = "takes" if node is self._input else "returns"
            if not isinstance(values[node], torch.Tensor):
                raise ModelNotSplittable(
                    f"{self._name}.forward returns {node.name} (a Python "
                    f"{type(values[node]).__name__}): a splittable model returns tensors (alone "
                    "or in a tuple, list or dict)")
            if not can_travel(values[node].dtype):
                raise ModelNotSplittable(
                    f"{self._name}.forward {what} {node.name} of dtype "
                    f"{dtype_name(values[node].dtype)}, which the Open Inference Protocol has no "
                    "datatype for: convert it in forward (torch.view_as_real for complex, "
                    "dequantize() for quantised tensors)")
        return tuple(_spec(name, values[node], batch_dims[node])
                     for name, node in zip(names, self._output_leaves, strict=True))

    def _group_steps(self, values: dict[fx.Node, Any]) -> list[_Step]:
        steps: list[_Step] = []
        pending: list[fx.Node] = []
        owner: dict[fx.Node, _Step] = {}
        for node in self._gm.graph.nodes:
            if node.op in ("placeholder", "output") or node in self._derived:
                continue
            source = node.args[0] if node.target is operator.getitem else None
            if source in owner and not isinstance(values[source], torch.Tensor):
                owner[source].nodes.append(node)  # unpacking a tuple goes with what made it
                owner[node] = owner[source]
                continue
            pending.append(node)
            if not self._is_passive(node):
                steps.append(_Step(pending, _describe(node, self._modules)))
                owner.update(dict.fromkeys(pending, steps[-1]))
                pending = []
        if not steps:
            raise ModelNotSplittable(f"{self._name} has no layers to split between")
        steps[-1].nodes.extend(pending)  # trailing reshapes belong to the last layer
        return steps

    def _is_passive(self, node: fx.Node) -> bool:
        if node.op == "get_attr":
            return True
        if node.op == "call_module":
            return isinstance(self._modules[node.target], _PASSIVE_MODULES)
        if node.op == "call_function":
            return node.target in _PASSIVE_FUNCTIONS
        if node.op == "call_method":
            return node.target in _PASSIVE_METHODS
        return False

    def _valid_cuts(self, steps: list[_Step], values: dict[fx.Node, Any],
                    batch_dims: dict[fx.Node, int | None]
                    ) -> tuple[list[_Step], list[list[fx.Node]], list[str]]:
        """Merge layers across cuts that cannot be offered, until every cut can."""
        notes: list[str] = []
        while True:
            live = _live_sets(steps, self._input, self._output, self._derived)
            bad = next(((cut, why) for cut in range(1, len(steps))
                        if (why := self._why_not(cut, steps, live[cut], values, batch_dims))),
                       None)
            if bad is None:
                return steps, live, notes
            cut, why = bad
            notes.append(f"no cut after {steps[cut - 1].layer.name}: {why}")
            steps[cut - 1 : cut + 1] = [_Step(steps[cut - 1].nodes + steps[cut].nodes,
                                              steps[cut].layer)]

    def _why_not(self, cut: int, steps: list[_Step], live: list[fx.Node],
                 values: dict[fx.Node, Any], batch_dims: dict[fx.Node, int | None]) -> str:
        """Why the cut after step ``cut`` cannot be offered ('' if it can)."""
        for node in live:
            if not isinstance(values[node], torch.Tensor):
                return (f"it would carry {node.name} (a Python {type(values[node]).__name__} "
                        "computed from the input's data), not a tensor")
            if batch_dims[node] == _IRREGULAR:
                return (f"the shape of {node.name} does not follow the batch size (it depends "
                        "on the data or drops the batch dimension)")
            if not can_travel(values[node].dtype):
                return (f"it would carry {node.name} of dtype {dtype_name(values[node].dtype)}, "
                        "which the Open Inference Protocol has no datatype for")
        later = [n for step in steps[cut:] for n in step.nodes]
        if _aliased([values[n] for n in live]) and any(_in_place(n, self._modules)
                                                      for n in later):
            return ("it would send views of one tensor as separate copies, which an in-place "
                    "operation after it would tell apart")
        if all(batch_dims[n] is None for n in live) and any(
                q in self._queries and q not in self._frozen
                and batch_dims[q.all_input_nodes[0]] is not None
                for q in self._needed([*later, self._output])):
            return "nothing it carries has the batch dimension that the layers after it need"
        return ""


def output_tensors(output: Any) -> tuple[torch.Tensor, ...]:
    """The tensors in a model's output (a tensor, or a tuple, list or dict of them), in order."""
    leaves: list[torch.Tensor] = []
    map_aggregate(output, lambda v: leaves.append(v) if isinstance(v, torch.Tensor) else v)
    return tuple(leaves)


def top1(output: Any) -> torch.Tensor:
    """The model's top-1 class per sample, from its first output: the one place that reads a
    model's answer (a tensor, or a tuple, list or dict of them; the edge and the cloud's
    ``/offload`` both use it)."""
    first = output_tensors(output)[0]
    return (first.reshape(first.shape[0], -1) if first.dim() else first.reshape(1, 1)).argmax(1)


def _rebuild(structure: Any, leaf: Callable[[fx.Node], Any]) -> Any:
    """``structure`` (the output node's argument) with each node replaced by ``leaf(node)``, in
    plain tuples, lists and dicts (fx's own ``map_arg`` gives immutable ones)."""
    if isinstance(structure, fx.Node):
        return leaf(structure)
    if isinstance(structure, dict):
        return {key: _rebuild(value, leaf) for key, value in structure.items()}
    if isinstance(structure, list):
        return [_rebuild(item, leaf) for item in structure]
    if isinstance(structure, tuple):
        items = [_rebuild(item, leaf) for item in structure]
        return type(structure)(*items) if hasattr(structure, "_fields") else tuple(items)
    return structure


def _private_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in eval mode: the split neither changes it nor follows its changes."""
    if not isinstance(module, nn.Module):
        raise ModelNotSplittable(f"expected a torch.nn.Module, got {type(module).__name__}")
    try:
        own = copy.deepcopy(module)
    except Exception as exc:  # a module holding something that cannot be copied
        raise ModelNotSplittable(
            f"cannot copy {type(module).__name__} ({_first_line(exc)}): a split keeps its own "
            "copy so that the caller's module stays as it is") from None
    return own.eval()


def _trace(module: nn.Module, leaf_modules: tuple[type[nn.Module], ...],
           record: bool = False) -> fx.Graph:
    name = type(module).__name__
    tracer = _Tracer(leaf_modules, record)
    try:
        return tracer.trace(module, concrete_args=_optional_arguments(module))
    except ModelNotSplittable:
        raise
    except Exception as exc:  # fx raises many types for untraceable Python
        # fx leaves the modules it was inside when the error came on its stack.
        inside = [(path, kind) for path, kind in tracer.module_stack.values() if path]
        if inside:
            path, kind = inside[-1]
            advice = (f"in submodule {path!r} ({kind.__name__}): pass "
                      f"leaf_modules=[{kind.__name__}] to keep it whole")
        else:
            advice = (f"in {name}.forward itself: move that code into a submodule and pass its "
                      "type as leaf_modules to keep it whole")
        raise ModelNotSplittable(
            f"torch.fx cannot trace {name} ({_first_line(exc)}) at "
            f"{_user_line(exc.__traceback__)}, {advice}") from exc


# Frames that are not the user's: torch's, edgesplit's own, and Python's standard library (whose
# folder holds site-packages, where the user's own installed code may live).
_NOT_USERS = (os.path.dirname(torch.__file__ or "") + os.sep,
              os.path.dirname(os.path.dirname(__file__)) + os.sep)
_STDLIB = os.path.dirname(inspect.__file__ or "") + os.sep


def _user_line(tb: Any) -> str:
    """``file:line `code```, the innermost frame in the user's code (not torch's, Python's
    or edgesplit's own) of a traceback."""
    frames = [(f.filename, f.lineno, f.line) for f in traceback.extract_tb(tb)]
    return _innermost_user_frame(frames) or "an unknown line"


def _source_of(node: fx.Node) -> str:
    """`` (file:line `code`)``, the user's line that made ``node``, where fx recorded it."""
    frames = [(path, int(line), code) for path, line, code in
              re.findall(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)',
                         node.stack_trace or "")]
    where = _innermost_user_frame(frames)
    return f" ({where})" if where else ""


def _innermost_user_frame(frames: Sequence[tuple[str, int | None, str | None]]) -> str:
    for path, line, code in reversed(frames):
        stdlib = path.startswith(_STDLIB) and "site-packages" not in path
        if "<" not in path and not stdlib and not path.startswith(_NOT_USERS):
            return f"{os.path.basename(path)}:{line} `{(code or '').strip()}`"
    return ""


def _optional_arguments(module: nn.Module) -> dict[str, Any] | None:
    """``forward``'s arguments after the first, at their defaults (fx specialises on them)."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    named = [p for p in parameters if p.kind in kinds]
    required = [p.name for p in named[1:] if p.default is inspect.Parameter.empty]
    if not named:
        raise ModelNotSplittable(f"{type(module).__name__}.forward must take the input tensor "
                                 "as a named first argument, as in forward(self, x)")
    if required:
        raise ModelNotSplittable(
            f"{type(module).__name__}.forward takes {len(required) + 1} required inputs "
            f"({', '.join(p.name for p in named if p.default is inspect.Parameter.empty)}): "
            "a splittable model takes one tensor (further arguments need defaults)")
    return {p.name: p.default for p in named[1:]} or None


def _one_sample(sample: object) -> torch.Tensor:
    if not isinstance(sample, torch.Tensor):
        raise ModelNotSplittable(f"the sample input must be a tensor, got {type(sample).__name__}")
    if sample.dim() == 0 or sample.shape[0] != 1:
        raise ModelNotSplittable(
            f"the sample input has shape {list(sample.shape)}: a split learns its sizes from one "
            "sample with a leading batch dimension of 1 (pass x[:1], or x.unsqueeze(0))")
    return sample


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _batch_dim(one: torch.Tensor, two: object) -> int | None:
    """The dimension that doubled from batch 1 to 2, None if none changed, else irregular."""
    if not isinstance(two, torch.Tensor) or one.dim() != two.dim():
        return _IRREGULAR
    changed = [d for d, (a, b) in enumerate(zip(one.shape, two.shape, strict=True)) if a != b]
    if not changed:
        return None
    if len(changed) == 1 and two.shape[changed[0]] == 2 * one.shape[changed[0]]:
        return changed[0]
    return _IRREGULAR


# Operations whose output's shape is set by the values of their input (and ``item``, a number
# from the data that may size what comes after it).
_DATA_SHAPE_FUNCTIONS = {torch.nonzero, torch.argwhere, torch.masked_select, torch.unique,
                         torch.unique_consecutive, torch.bincount}
_DATA_SHAPE_METHODS = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive",
                       "bincount", "item", "tolist"}


def _makes_data_shape(node: fx.Node, values: dict[fx.Node, Any]) -> bool:
    target = node.target
    if node.op == "call_method":
        return target in _DATA_SHAPE_METHODS or (
            target == "repeat_interleave" and _holds_tensor(node.args[1:], values))
    if node.op != "call_function":
        return False
    if target is operator.getitem:  # indexing with a boolean mask
        return _holds_tensor(node.args[1:], values, lambda t: t.dtype in (torch.bool,
                                                                          torch.uint8))
    if target is torch.where:
        return len(node.args) + len(node.kwargs) == 1
    if target is torch.repeat_interleave:
        return _holds_tensor((*node.args[1:], *node.kwargs.values()), values)
    return target in _DATA_SHAPE_FUNCTIONS


def _holds_tensor(arguments: Any, values: dict[fx.Node, Any],
                  test: Callable[[torch.Tensor], bool] = lambda _: True) -> bool:
    nodes: list[fx.Node] = []
    map_arg(arguments, nodes.append)
    return any(isinstance(values.get(n), torch.Tensor) and test(values[n]) for n in nodes)


def _grown(value: Any) -> Any:
    """``value`` as other data could have made it: a tensor with one more (zero) row, an
    integer one larger (one smaller if positive)."""
    if isinstance(value, torch.Tensor) and value.dim():
        return torch.cat([value, value.new_zeros((1, *value.shape[1:]))])
    if isinstance(value, int) and not isinstance(value, bool):
        return value - 1 if value > 0 else value + 1
    return value


def _signature(value: Any) -> Any:
    """What of ``value`` the split relies on: a tensor's shape, a number's value."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape))
    if isinstance(value, list | tuple):
        return tuple(_signature(v) for v in value)
    return value if isinstance(value, int | float | bool | str | None) else type(value)


def _descendants(nodes: set[fx.Node]) -> set[fx.Node]:
    found, stack = set(nodes), list(nodes)
    while stack:
        for user in stack.pop().users:
            if user not in found:
                found.add(user)
                stack.append(user)
    return found


def _is_query(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS | _STATIC_METHODS
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in _SHAPE_ATTRIBUTES | _STATIC_ATTRIBUTES
    return node.op == "call_function" and node.target in (len, torch.numel)


def _static_query(node: fx.Node) -> bool:
    return node.target in _STATIC_METHODS or (node.target is getattr
                                              and node.args[1] in _STATIC_ATTRIBUTES)


def _classify(nodes: list[fx.Node], input_node: fx.Node, batch_dims: dict[fx.Node, int | None],
              modules: dict[str, nn.Module]) -> tuple[set[fx.Node], set[fx.Node]]:
    """The derived nodes (independent of the input's data) and, among them, the shape queries.

    A derived value that an in-place operation on data changes is data itself.
    """
    forced: set[fx.Node] = set()
    while True:
        derived: set[fx.Node] = set()
        queries: set[fx.Node] = set()
        for node in nodes:
            if node is input_node or node.op == "output" or node in forced:
                continue
            inputs = node.all_input_nodes
            if all(n in derived for n in inputs):
                derived.add(node)
            elif _is_query(node) and len(inputs) == 1 and batch_dims.get(
                    inputs[0], _IRREGULAR) != _IRREGULAR:
                derived.add(node)
                queries.add(node)
        mutated = {n.args[0] for n in nodes if n not in derived and _in_place(n, modules)
                   and n.args and isinstance(n.args[0], fx.Node) and n.args[0] in derived}
        if mutated <= forced:
            return derived, queries
        forced |= mutated


def _in_place(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_method":
        return str(node.target).endswith("_") and not str(node.target).startswith("_")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return (node.target in _IN_PLACE_FUNCTIONS or name.endswith("_") or "out" in node.kwargs
                or bool(node.kwargs.get("inplace")))
    if node.op == "call_module":
        return bool(getattr(modules[str(node.target)], "inplace", False))
    return False


def _aliased(tensors: list[torch.Tensor]) -> bool:
    """Whether two of ``tensors`` share memory (one is a view of the other, or both of one)."""
    seen: set[int] = set()
    for tensor in tensors:
        if tensor.numel():
            pointer = tensor.untyped_storage().data_ptr()
            if pointer in seen:
                return True
            seen.add(pointer)
    return False


def _output_names(structure: Any, count: int) -> list[str]:
    if isinstance(structure, fx.Node):
        return ["output"]
    if hasattr(structure, "_fields") and len(structure) == count and all(
            isinstance(v, fx.Node) for v in structure):
        return list(structure._fields)
    if (isinstance(structure, dict) and len(structure) == count
            and all(isinstance(k, str) and isinstance(v, fx.Node) for k, v in structure.items())):
        return list(structure)
    return [f"output_{i}" for i in range(count)]


def _check_all(specs: Sequence[TensorSpec], tensors: Sequence[torch.Tensor], what: str) -> int:
    if len(tensors) != len(specs):
        raise WireFormatError(f"{what} takes {len(specs)} tensor(s) "
                              f"({', '.join(s.name for s in specs)}), got {len(tensors)}")
    batches = {s.name: b for s, t in zip(specs, tensors, strict=True)
               if (b := s.batch_of(t, f"at {what}")) is not None}
    if len(set(batches.values())) > 1:
        raise WireFormatError(f"the tensors at {what} disagree on the batch size ("
                              + ", ".join(f"{n}: {b}" for n, b in batches.items()) + ")")
    return next(iter(batches.values()), 1)


def _remove_identities(graph: fx.Graph, modules: dict[str, nn.Module]) -> None:
    for node in list(graph.nodes):
        removed = (node.op == "call_module" and isinstance(modules[node.target], _REMOVED_MODULES)
                   ) or (node.op == "call_function" and node.target in _REMOVED_FUNCTIONS)
        if removed:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


def _is_named_tuple(target: object) -> bool:
    return isinstance(target, type) and issubclass(target, tuple) and hasattr(target, "_fields")


def _inline_named_tuples(graph: fx.Graph) -> None:
    """fx records a NamedTuple returned by ``forward`` as a call of its class; put the tuple
    itself in the output instead, so that its tensors are outputs like any tuple's."""
    output = next(n for n in graph.nodes if n.op == "output")

    def inline(arg: Any) -> Any:
        if (isinstance(arg, fx.Node) and arg.op == "call_function"
                and _is_named_tuple(arg.target) and not arg.kwargs):
            assert callable(arg.target)
            return arg.target(*(inline(a) for a in arg.args))
        if isinstance(arg, list | tuple) and not hasattr(arg, "_fields"):
            return type(arg)(inline(a) for a in arg)
        if isinstance(arg, dict):
            return {key: inline(value) for key, value in arg.items()}
        return arg

    output.args = (inline(output.args[0]),)
    for node in reversed(list(graph.nodes)):
        if _is_named_tuple(node.target) and not node.users:
            graph.erase_node(node)


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> Layer:
    if node.op == "call_module":
        return Layer(0, str(node.target), type(modules[str(node.target)]).__name__)
    target = node.target
    kind = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return Layer(0, node.name, kind)


def _owners(steps: list[_Step], input_node: fx.Node) -> dict[fx.Node, int]:
    owner = {input_node: 0}
    for index, step in enumerate(steps, 1):
        for node in step.nodes:
            owner[node] = index
    return owner


def _live_sets(steps: list[_Step], input_node: fx.Node, output_node: fx.Node,
               derived: set[fx.Node]) -> list[list[fx.Node]]:
    """For each cut 0..N, the nodes defined at or before it and used after it, in graph order
    (derived nodes are recomputed on each side, so nothing is live for them)."""
    owner = _owners(steps, input_node)
    n = len(steps)
    last_use = {}
    for node in owner:
        uses = [n + 1 if user is output_node else owner[user] for user in node.users
                if user not in derived]
        if uses:
            last_use[node] = max(uses)
    ordered = list(owner)
    return [[node for node in ordered if owner[node] <= cut < last_use.get(node, -1)]
            for cut in range(n + 1)]


def _release_plan(steps: list[_Step], output_node: fx.Node,
                  derived: set[fx.Node]) -> list[list[fx.Node]]:
    """After each step, the values no later step needs (so a run keeps little memory)."""
    owner = {node: index for index, step in enumerate(steps) for node in step.nodes}
    release: list[list[fx.Node]] = [[] for _ in steps]
    for step in steps:
        for node in step.nodes:
            users = [u for u in node.users if u not in derived]
            if users and output_node not in users:
                release[max(owner[u] for u in users)].append(node)
    return release


def _spec(name: str, value: torch.Tensor, batch_dim: int | None) -> TensorSpec:
    irregular = batch_dim == _IRREGULAR
    return TensorSpec(name, tuple(value.shape), dtype_name(value.dtype),
                      None if irregular else batch_dim, free=irregular)
