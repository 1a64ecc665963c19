"""A digest of a split model: the same digest on the edge and the cloud means the same model.

``model_digest`` hashes (SHA-256) everything that decides what a split computes: the split
graph as ``SplitModel`` runs it (every node, its operation, target and arguments), each called
submodule's type and hyperparameters, the split points it offers and the tensors that cross
them, the outputs, and every weight, buffer and constant tensor the graph reads (name, dtype,
shape and bytes). Two loads of the same weights into the same network give the same digest in
any process on any machine; a changed weight, dtype, layer or offered cut gives another.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterator

import torch
from torch import fx, nn

from edgesplit.core.splitting import SplitModel, TensorSpec

PREFIX = "sha256:"


def model_digest(split: SplitModel) -> str:
    """``"sha256:<64 hex digits>"`` of ``split``'s graph, split points and tensors.

    Taken once per split, the first time it is asked for, and remembered: a split's weights do
    not change after it is made, and a submodule swapped later for a faster kernel
    (``SplitModel.swap_module``, the cloud's tuned linears) changes what would be hashed, not
    what is computed. The cloud asks as it loads a model, before any swap.
    """
    known = _DIGESTS.get(split)
    if known is None:
        known = _DIGESTS[split] = _digest(split)
    return known


_DIGESTS: weakref.WeakKeyDictionary[SplitModel, str] = weakref.WeakKeyDictionary()


def _digest(split: SplitModel) -> str:
    hasher = hashlib.sha256()
    for part in _structure(split):
        hasher.update(part.encode())
        hasher.update(b"\n")
    for name, tensor in _tensors(split.graph_module()):
        hasher.update(f"{name} {_dtype(tensor)} {list(tensor.shape)}\n".encode())
        hasher.update(_raw_bytes(tensor))
    return PREFIX + hasher.hexdigest()


def _structure(split: SplitModel) -> Iterator[str]:
    """The lines that describe what the split computes, apart from its tensors' values."""
    gm = split.graph_module()
    yield str(gm.graph)  # node by node: op, target, arguments; no source lines or addresses
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = modules[str(node.target)]
            yield f"module {node.target} {type(module).__module__}.{type(module).__qualname__}"
            yield module.extra_repr()
    for point in split.split_points:
        yield f"split {point.split_point} {point.layer} {point.layer_type}"
        yield from (_spec(spec) for spec in point.tensors)
    yield from (f"output {_spec(spec)}" for spec in split.outputs)


def _spec(spec: TensorSpec) -> str:
    return f"{spec.name} {list(spec.shape)} {spec.dtype} {spec.batch_dim} {spec.free}"


def _tensors(gm: fx.GraphModule) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer, and every other tensor the graph reads (``get_attr``
    constants), sorted by name."""
    found: dict[str, torch.Tensor] = dict(gm.state_dict(keep_vars=True))
    for node in gm.graph.nodes:
        if node.op == "get_attr" and str(node.target) not in found:
            value = _attribute(gm, str(node.target))
            if isinstance(value, torch.Tensor):
                found[str(node.target)] = value
    return sorted(found.items())


def _attribute(module: nn.Module, path: str) -> object:
    value: object = module
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's values as bytes in row-major order (any dtype, bfloat16 included)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.view(torch.uint8).numpy().tobytes()
