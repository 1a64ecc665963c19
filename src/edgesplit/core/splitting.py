"""Turn any ``torch.nn.Module`` into an ordered list of split points, without touching ``forward``.

The module is traced with ``torch.fx``. Every node that computes something is a *layer*; the
layers in the graph's topological order are numbered ``1..N`` and a split point ``sp`` is the cut
after layer ``sp`` (``0`` sends the raw input; ``N`` runs every layer on the edge and leaves the
cloud nothing but the final output, as in the thesis, where results land in the cloud). What
crosses a cut is the set of *live* tensors: produced at or before the cut and used after it.
For a chain that is one tensor; after a residual fork it is two.

Three kinds of node are not layers:

- Dropout and Identity are removed (identities at inference, as in the thesis);
- parameter-free reshapes and shape queries (``flatten``, ``view``, ``reshape``, ``size``, ...)
  travel with the layer after them, so AlexNet's cut after the average pool sends 256x6x6;
- a cut that would carry anything but tensors (say a Python int from ``x.size(0)``) is not
  offered: the layers on both sides of it run as one.

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

import operator
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx.node import map_arg

from edgesplit.errors import InvalidSplitPoint, ModelNotSplittable, WireFormatError

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


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one tensor that crosses a cut (batch of one)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * torch_dtype(self.dtype).itemsize


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
    def __init__(self, leaf_modules: tuple[type[nn.Module], ...]) -> None:
        super().__init__()
        self._extra_leaves = leaf_modules

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self._extra_leaves) or super().is_leaf_module(m, qualname)


@dataclass
class _Step:
    nodes: list[fx.Node]  # passive nodes first, the layer node last
    layer: Layer


class SplitModel:
    """A model cut into layers ``1..N``; ``head`` and ``tail`` run either side of a split point.

    ``sample_input`` (batch of one) is run once to learn the shapes and sizes that cross each cut.
    ``leaf_modules`` lists module types to keep whole (for parts torch.fx cannot trace).
    """

    def __init__(
        self,
        module: nn.Module,
        sample_input: torch.Tensor,
        *,
        leaf_modules: Iterable[type[nn.Module]] = (),
    ) -> None:
        module.eval()
        try:
            graph = _Tracer(tuple(leaf_modules)).trace(module)
        except Exception as exc:  # fx raises many types for untraceable Python
            raise ModelNotSplittable(
                f"torch.fx cannot trace {type(module).__name__} ({exc}); pass the untraceable "
                "submodule types as leaf_modules to keep them whole"
            ) from exc
        self._gm = fx.GraphModule(module, graph)
        self._modules = dict(self._gm.named_modules())
        _remove_identities(self._gm.graph, self._modules)
        placeholders = [n for n in self._gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ModelNotSplittable(
                f"{type(module).__name__}.forward takes {len(placeholders)} inputs; "
                "a splittable model takes exactly one tensor"
            )
        self._input = placeholders[0]
        self._output = next(n for n in self._gm.graph.nodes if n.op == "output")
        steps = self._group_steps()
        with torch.inference_mode():
            values = self._trace_values(steps, sample_input)
        self._steps, self._live = _valid_cuts(steps, values, self._input, self._output)
        self.layers: tuple[Layer, ...] = tuple(
            Layer(i, s.layer.name, s.layer.type) for i, s in enumerate(self._steps, 1)
        )
        self.split_points: tuple[SplitPoint, ...] = tuple(
            SplitPoint(
                sp,
                "input" if sp == 0 else self.layers[sp - 1].name,
                "Input" if sp == 0 else self.layers[sp - 1].type,
                tuple(_spec(n, values[n]) for n in live),
            )
            for sp, live in enumerate(self._live)
        )
        self._release = _release_plan(self._steps, self._output)

    @property
    def n_layers(self) -> int:
        return len(self._steps)

    def head(self, x: torch.Tensor, split_point: int,
             timings: list[float] | None = None) -> tuple[torch.Tensor, ...]:
        """Run layers ``1..split_point`` on ``x``; return the tensors that cross the cut.

        With ``timings`` given, the time of each layer run is appended to it (seconds).
        """
        self.check_split_point(split_point)
        self.check_tensors((x,), 0)
        env = self._run({self._input: x}, 0, split_point, timings)
        return tuple(env[n] for n in self._live[split_point])

    def tail(self, tensors: torch.Tensor | Sequence[torch.Tensor], split_point: int,
             timings: list[float] | None = None) -> Any:
        """Run layers ``split_point+1..N`` on what ``head`` sent; return the model's output."""
        self.check_split_point(split_point)
        if isinstance(tensors, torch.Tensor):
            tensors = (tensors,)
        self.check_tensors(tensors, split_point)
        env = self._run(dict(zip(self._live[split_point], tensors, strict=True)),
                        split_point, self.n_layers, timings)
        return map_arg(self._output.args[0], env.__getitem__)

    def __call__(self, x: torch.Tensor, timings: list[float] | None = None) -> Any:
        """The whole model, layer by layer (equal to the original module's output)."""
        return self.tail(self.head(x, self.n_layers, timings), self.n_layers)

    def check_tensors(self, tensors: Sequence[torch.Tensor], split_point: int) -> None:
        """Raise ``WireFormatError`` unless ``tensors`` are what crosses ``split_point``.

        The batch dimension may differ from the sample's; every other dimension must match.
        """
        specs = self.split_points[split_point].tensors
        if len(tensors) != len(specs):
            raise WireFormatError(
                f"split point {split_point} takes {len(specs)} tensor(s), got {len(tensors)}"
            )
        for spec, t in zip(specs, tensors, strict=True):
            if not isinstance(t, torch.Tensor):
                raise WireFormatError(f"{spec.name}: expected a tensor, got {type(t).__name__}")
            if dtype_name(t.dtype) != spec.dtype:
                raise WireFormatError(
                    f"{spec.name} at split point {split_point}: expected dtype {spec.dtype}, "
                    f"got {dtype_name(t.dtype)}"
                )
            if t.dim() != len(spec.shape) or tuple(t.shape[1:]) != spec.shape[1:] or (
                t.dim() and t.shape[0] < 1
            ):
                raise WireFormatError(
                    f"{spec.name} at split point {split_point}: expected shape "
                    f"{list(spec.shape)} (any batch size), got {list(t.shape)}"
                )

    def check_split_point(self, split_point: object) -> int:
        """``split_point`` if it is an integer from 0 to N; else ``InvalidSplitPoint``."""
        if (not isinstance(split_point, int) or isinstance(split_point, bool)
                or not 0 <= split_point <= self.n_layers):
            raise InvalidSplitPoint(
                f"split point {split_point!r} is out of range: expected an integer "
                f"from 0 to {self.n_layers}"
            )
        return split_point

    def _run(self, env: dict[fx.Node, Any], start: int, stop: int,
             timings: list[float] | None) -> dict[fx.Node, Any]:
        clock = time.perf_counter
        with torch.inference_mode():
            for index in range(start, stop):
                began = clock() if timings is not None else 0.0
                for node in self._steps[index].nodes:
                    env[node] = self._execute(node, env)
                for node in self._release[index]:
                    env.pop(node, None)
                if timings is not None:
                    timings.append(clock() - began)
        return env

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
        raise ModelNotSplittable(f"unexpected fx node {node.op} {node.name}")

    def _group_steps(self) -> list[_Step]:
        steps: list[_Step] = []
        pending: list[fx.Node] = []
        for node in self._gm.graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            pending.append(node)
            if not self._is_passive(node):
                steps.append(_Step(pending, _describe(node, self._modules)))
                pending = []
        if not steps:
            raise ModelNotSplittable("the model has no layers to split between")
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

    def _trace_values(self, steps: list[_Step], x: torch.Tensor) -> dict[fx.Node, Any]:
        values: dict[fx.Node, Any] = {self._input: x}
        for step in steps:
            for node in step.nodes:
                values[node] = self._execute(node, values)
        return values


def _remove_identities(graph: fx.Graph, modules: dict[str, nn.Module]) -> None:
    for node in list(graph.nodes):
        removed = (node.op == "call_module" and isinstance(modules[node.target], _REMOVED_MODULES)
                   ) or (node.op == "call_function" and node.target in _REMOVED_FUNCTIONS)
        if removed:
            node.replace_all_uses_with(node.args[0])
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


def _live_sets(steps: list[_Step], input_node: fx.Node,
               output_node: fx.Node) -> list[list[fx.Node]]:
    """For each cut 0..N, the nodes defined at or before it and used after it, in graph order."""
    owner = _owners(steps, input_node)
    n = len(steps)
    last_use = {
        node: max((n + 1 if user is output_node else owner[user]) for user in node.users)
        for node in owner if node.users
    }
    ordered = list(owner)
    return [[node for node in ordered if owner[node] <= cut < last_use.get(node, -1)]
            for cut in range(n + 1)]


def _valid_cuts(steps: list[_Step], values: dict[fx.Node, Any], input_node: fx.Node,
                output_node: fx.Node) -> tuple[list[_Step], list[list[fx.Node]]]:
    """Merge layers across cuts that would carry non-tensors, until every cut carries tensors."""
    while True:
        live = _live_sets(steps, input_node, output_node)
        bad = next((cut for cut in range(1, len(steps))
                    if not all(isinstance(values[node], torch.Tensor) for node in live[cut])),
                   None)
        if bad is None:
            break
        steps[bad - 1 : bad + 1] = [_Step(steps[bad - 1].nodes + steps[bad].nodes,
                                          steps[bad].layer)]
    for cut in (0, len(steps)):
        if not all(isinstance(values[node], torch.Tensor) for node in live[cut]):
            raise ModelNotSplittable(
                "the model's input and output must be tensors (or tuples of tensors)"
            )
    return steps, live


def _release_plan(steps: list[_Step], output_node: fx.Node) -> list[list[fx.Node]]:
    """After each step, the values no later step needs (so a run keeps little memory)."""
    owner = {node: index for index, step in enumerate(steps) for node in step.nodes}
    release: list[list[fx.Node]] = [[] for _ in steps]
    for step in steps:
        for node in step.nodes:
            users = list(node.users)
            if users and output_node not in users:
                last = max(owner[u] for u in users)
                release[last].append(node)
    return release


def _spec(node: fx.Node, value: torch.Tensor) -> TensorSpec:
    return TensorSpec(node.name, tuple(value.shape), dtype_name(value.dtype))
