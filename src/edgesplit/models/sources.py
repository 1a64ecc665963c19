"""Where a model comes from: a zoo name, a ``torch.export`` program file, or a Python factory.

``load_model(source)`` reads any of them into a ``LoadedModel`` (name, split, sample input,
digest), so that every command takes a user's own model as it takes a zoo name:

- a zoo name (``alexnet``): built as the zoo builds it;
- a file ending in ``.pt2`` written by ``torch.export.save``: no Python source is needed. It is
  split on its own graph, cut along the module hierarchy the program records, so layers are
  named ``features.3`` (type ``Conv2d``) as in the module it was exported from. Its name is the
  file's stem, its sample input has the shape and dtype the program was exported with;
- ``package.module:factory``: the factory is imported and called with no arguments and returns
  the module, or ``(module, sample_input)``; its name is the factory's.

What is loaded how. A ``.pt2`` file is a zip archive; ``torch.export.load`` would unpickle
parts of it (tensor subclasses, custom objects, the example inputs, with a fallback to
``weights_only=False``), load compiled code (AOTInductor) and execute the guards' Python code
it holds. edgesplit reads the archive itself first and refuses any that holds a pickled
weight or constant, a custom object, compiled code or a legacy pickle file; it drops the
example inputs and the guards' code and hands torch only the JSON graph and the raw weight
bytes that remain; after loading, every operation the graph calls must be a registered torch
operator (``torch.ops.*``). Nothing from a ``.pt2`` is unpickled. Still: load programs you
trust, as you would trust code (their symbolic shape expressions are parsed by sympy). A
factory is the user's own Python code and runs as such.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import operator
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.export import unflatten
from torch.export.unflatten import InterpreterModule

from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel, dtype_name, torch_dtype
from edgesplit.errors import EdgesplitError, ModelSourceError, WireFormatError
from edgesplit.models.digest import model_digest
from edgesplit.models.names import PROGRAM_SUFFIX, is_zoo, model_name

log = logging.getLogger(__name__)

MAX_PROGRAM_BYTES = 4 << 30
"""A program file larger than this is refused before it is read (4 GiB)."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to split: its name, the split, one sample input and its digest."""

    name: str
    split: SplitModel
    sample: torch.Tensor
    digest: str
    source: str  # what it was loaded from: the zoo name, the file, the entry point

    @property
    def in_zoo(self) -> bool:
        return self.name == self.source and self.name in zoo.MODELS


def load_model(source: str, *, input_shape: Sequence[int] | None = None,
               input_dtype: str | None = None) -> LoadedModel:
    """``source`` (a zoo name, a ``.pt2`` file, ``package.module:factory``) loaded and split.

    ``input_shape`` (batch first, e.g. ``[1, 3, 32, 32]``) and ``input_dtype`` give the sample
    input a factory does not return; for a program they must agree with its own. Errors are
    ``UnknownModel``, ``ModelSourceError`` or ``ModelNotSplittable``, one line each.
    """
    name = model_name(source)
    if is_zoo(source):
        if input_shape is not None or input_dtype is not None:
            raise ModelSourceError(f"{source} is a zoo model with a fixed input: leave out "
                                   "--input-shape and --input-dtype")
        split, sample = zoo.build_split(source), zoo.sample_input(source)
    elif source.endswith(PROGRAM_SUFFIX):
        split, sample = load_program(Path(source), input_shape, input_dtype)
    else:
        split, sample = load_factory(source, input_shape, input_dtype)
    return LoadedModel(name, split, sample, model_digest(split), source)


def load_factory(source: str, input_shape: Sequence[int] | None,
                 input_dtype: str | None) -> tuple[SplitModel, torch.Tensor]:
    """Import and call ``package.module:factory``; split what it returns."""
    module_name, _, attribute = source.rpartition(":")
    try:
        imported = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything on import
        raise ModelSourceError(f"cannot import {source}: {_first_line(exc)}"
                               f"{_path_hint(exc, module_name)}") from None
    factory = getattr(imported, attribute, None)
    if not callable(factory):
        where = imported.__file__ or "a namespace package"
        raise ModelSourceError(f"{source}: the module {module_name} ({where}) has no function "
                               f"{attribute}")
    try:
        made = factory()
    except Exception as exc:  # nor may a factory's failure stop anything but this model
        raise ModelSourceError(f"{source}() raised {_first_line(exc)}") from None
    module, sample = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if not isinstance(module, nn.Module):
        raise ModelSourceError(f"{source}() returned {type(module).__name__}: expected a "
                               "torch.nn.Module, or (module, sample_input)")
    if sample is None:
        if input_shape is None:
            raise ModelSourceError(f"{source}() returned no sample input: give its shape with "
                                   "--input-shape (batch first, e.g. 1,3,32,32)")
        sample = _sample(input_shape, input_dtype or "float32")
    elif not isinstance(sample, torch.Tensor):
        raise ModelSourceError(f"{source}() returned a sample input of type "
                               f"{type(sample).__name__}: expected a tensor")
    return SplitModel(module, sample), sample


def load_program(path: Path, input_shape: Sequence[int] | None,
                 input_dtype: str | None) -> tuple[SplitModel, torch.Tensor]:
    """A ``torch.export`` program file, checked (see the module's note), loaded and split."""
    program = read_program(path)
    shape, dtype = _program_input(program, path)
    if input_shape is not None and tuple(input_shape) != shape:
        raise ModelSourceError(f"{path} was exported for input shape {list(shape)}, not "
                               f"{list(input_shape)}: leave out --input-shape or export again")
    if input_dtype is not None and input_dtype != dtype:
        raise ModelSourceError(f"{path} was exported for input dtype {dtype}, not "
                               f"{input_dtype}")
    sample = _sample(shape, dtype)
    root, leaf = _module_tree(program, path)
    return SplitModel(root, sample, leaf_modules=(leaf,), take=True), sample


def read_program(path: Path) -> torch.export.ExportedProgram:
    """The checked ``ExportedProgram`` in ``path``; ``ModelSourceError`` if it is not one."""
    try:
        size = path.stat().st_size
        if size > MAX_PROGRAM_BYTES:
            raise ModelSourceError(f"{path} has {size} bytes: more than the "
                                   f"{MAX_PROGRAM_BYTES >> 30} GiB a program may have")
        data = path.read_bytes()
    except OSError as exc:
        raise ModelSourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    archive = checked_archive(data, path)
    quiet = logging.getLogger("torch.export")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # torch logs a traceback as a warning before it raises
    try:
        program = torch.export.load(io.BytesIO(archive))
    except Exception as exc:  # torch raises many kinds for a file it cannot read
        raise ModelSourceError(f"{path} is not a torch.export program this torch "
                               f"({torch.__version__}) can load: {_first_line(exc)}") from None
    finally:
        quiet.setLevel(level)
    _check_operators(program, path)
    return program


# -- the archive, before torch sees it --------------------------------------------------------

_PICKLED = ("data/aotinductor/", "data/weights/model.pt", "data/constants/model.pt")
"""Parts of a PT2 archive that would be unpickled or run as compiled code: refused."""
_DROPPED = "data/sample_inputs/"
"""The example inputs: a pickle (torch.load, weights_only falling back to False). Emptied."""
_TENSOR_CONSTANT = "tensor_"


def checked_archive(data: bytes, path: Path) -> bytes:
    """``data`` rewritten with nothing torch would unpickle or execute, or ModelSourceError."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        root = names[0].split("/")[0] + "/" if names else ""
        if f"{root}archive_format" not in names or archive.read(
                f"{root}archive_format") != b"pt2":
            raise ModelSourceError(f"{path} is a zip archive but not a torch.export program "
                                   "(no archive_format pt2): write it with torch.export.save")
        unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_PROGRAM_BYTES:  # zipfile reads no member past its stated size
            raise ModelSourceError(f"{path} unpacks to {unpacked} bytes: more than the "
                                   f"{MAX_PROGRAM_BYTES >> 30} GiB a program may have")
        for name in names:
            _check_member(archive, name, name.removeprefix(root), path)
        return _rewritten(archive, root)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, EdgesplitError):
            raise
        raise ModelSourceError(f"{path} is not a torch.export program (.pt2) file, or is "
                               f"truncated: {_first_line(exc)}") from None


def _check_member(archive: zipfile.ZipFile, name: str, inner: str, path: Path) -> None:
    if inner.startswith(_PICKLED) or inner.endswith((".pkl", ".so")):
        raise ModelSourceError(f"{path} holds {inner}, a pickle or compiled code that edgesplit "
                               "does not load: export the model again with torch.export.save")
    if inner.endswith(("_weights_config.json", "_constants_config.json")):
        config = json.loads(archive.read(name)).get("config", {})
        for fqn, payload in config.items():
            if payload.get("use_pickle") or (inner.endswith("_constants_config.json") and not
                                             str(payload.get("path_name", "")).startswith(
                                                 _TENSOR_CONSTANT)):
                raise ModelSourceError(
                    f"{path}: {fqn} is stored as a pickled object, which edgesplit does not "
                    "load: only plain tensors (no tensor subclasses or custom objects)")
    if inner.startswith("models/") and inner.endswith(".json"):
        _check_expressions(json.loads(archive.read(name)), path)


_SAFE_EXPRESSION = re.compile(
    r"(?:[a-z]{1,2}\d+|[A-Z][A-Za-z]*|oo|\d+(?:\.\d+)?(?:e[+-]?\d+)?|\*\*|[-+*/%(), <>=!&|~])*")
"""Symbolic shapes as torch writes them (``s0``, ``2*s0 + 1``, ``FloorDiv(s0, 2)``): sympy
parses them with eval, so nothing else (no attribute, no underscore name) is let through."""


def _check_expressions(value: Any, path: Path, key: str = "") -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            _check_expressions(item, path, name)
    elif isinstance(value, list):
        for item in value:
            _check_expressions(item, path, key)
    elif isinstance(value, str) and key == "expr_str" and not _SAFE_EXPRESSION.fullmatch(
            value):
        raise ModelSourceError(f"{path}: the shape expression {value[:40]!r} is not one "
                               "torch.export writes; edgesplit does not evaluate it")


def _rewritten(archive: zipfile.ZipFile, root: str) -> bytes:
    """The archive without its example inputs and guards' code (both stay out of torch)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
        for name in archive.namelist():
            inner = name.removeprefix(root)
            content = archive.read(name)
            if inner.startswith(_DROPPED):
                content = b""
            elif inner.startswith("models/") and inner.endswith(".json"):
                program = json.loads(content)
                program["guards_code"] = []
                content = json.dumps(program).encode()
            copy.writestr(name, content)
    return out.getvalue()


_ALLOWED_FUNCTIONS = {operator.getitem}
_REFUSED_OPERATORS = {"aten.from_file"}  # reads a file named in the program


def _check_operators(program: torch.export.ExportedProgram, path: Path) -> None:
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target in _ALLOWED_FUNCTIONS:
            continue
        target = node.target
        if not isinstance(target, torch._ops.OpOverload) or str(target).rpartition(".")[
                0] in _REFUSED_OPERATORS:
            raise ModelSourceError(f"{path} calls {target!r} at {node.name}, which is not a "
                                   "torch operator edgesplit runs from a file")


# -- the program as modules -------------------------------------------------------------------

class ExportedLayer(InterpreterModule):
    """A leaf module of the program (a ``Conv2d``, a ``ReLU``, ...): one layer of the split,
    of a subclass named after the module type the program records."""


def _module_tree(program: torch.export.ExportedProgram, path: Path) -> tuple[nn.Module, type]:
    """The program as a tree of modules: each module it recorded with submodules of its own is
    a ``GraphModule`` fx can trace through; each without is an ``ExportedLayer``, a layer."""
    types = {}
    for node in program.graph.nodes:
        for qualified, kind in (node.meta.get("nn_module_stack") or {}).values():
            types[qualified] = str(kind).rpartition(".")[2]
    try:
        with warnings.catch_warnings():  # torch's own deprecations, inside unflatten
            warnings.simplefilter("ignore", FutureWarning)
            tree = unflatten(program)
        root = _as_layers(tree, "", types)
        _return_as_exported(root, program)
    except EdgesplitError:
        raise
    except Exception as exc:  # torch's unflattening raises many kinds
        raise ModelSourceError(f"{path}: cannot rebuild the program's modules: "
                               f"{_first_line(exc)}") from None
    return root, ExportedLayer


def _as_layers(module: nn.Module, prefix: str, types: dict[str, str]) -> nn.Module:
    children = [(name, child) for name, child in module.named_children()
                if isinstance(child, InterpreterModule)]
    if prefix and not children and isinstance(module, InterpreterModule):
        kind = types.get(prefix, "Module")
        module.__class__ = _LAYER_TYPES.setdefault(kind, type(kind, (ExportedLayer,), {}))
        return module
    for name, child in children:
        setattr(module, name, _as_layers(child, f"{prefix}.{name}" if prefix else name, types))
    graph = module.graph
    assert isinstance(graph, fx.Graph)
    return fx.GraphModule(module, graph, class_name=types.get(prefix, "Exported").split(".")[-1])


_LAYER_TYPES: dict[str, type[ExportedLayer]] = {}


def _return_as_exported(root: nn.Module, program: torch.export.ExportedProgram) -> None:
    """The root returns what the exported module returned (a tensor, not a 1-tuple)."""
    assert isinstance(root, fx.GraphModule)
    output = next(n for n in root.graph.nodes if n.op == "output")
    flat = list(output.args[0]) if isinstance(output.args[0], (tuple, list)) else [
        output.args[0]]
    spec = program.call_spec.out_spec
    if spec is not None:
        output.args = (torch.utils._pytree.tree_unflatten(flat, spec),)
        root.recompile()


def _program_input(program: torch.export.ExportedProgram,
                   path: Path) -> tuple[tuple[int, ...], str]:
    users = program.graph_signature.user_inputs
    if len(users) != 1:
        raise ModelSourceError(f"{path} takes {len(users)} inputs: a split model takes one "
                               "tensor")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == users[0])
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        raise ModelSourceError(f"{path}: its input is not a tensor")
    try:
        shape = tuple(int(d) for d in value.shape)
    except (TypeError, ValueError):
        raise ModelSourceError(f"{path} was exported with a dynamic input shape "
                               f"({list(value.shape)}): export it with a fixed one") from None
    return shape, dtype_name(value.dtype)


def _sample(shape: Sequence[int], dtype: str) -> torch.Tensor:
    """A fixed sample input (seeded noise; zeros for integer inputs)."""
    try:
        kind = torch_dtype(dtype)
    except WireFormatError as exc:
        raise ModelSourceError(str(exc)) from None
    if any(d < 1 for d in shape) or not shape:
        raise ModelSourceError(f"input shape {list(shape)}: expected positive sizes, batch "
                               "first (e.g. 1,3,32,32)")
    if not kind.is_floating_point:
        return torch.zeros(tuple(shape), dtype=kind)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(tuple(shape), generator=generator).to(kind)


def _path_hint(exc: Exception, module_name: str) -> str:
    """How to make the factory's own module importable, when it (not one it imports) is what
    is missing: ``edgesplit`` is an installed command, so the current folder is not on the
    Python path as it is for ``python -m``."""
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if missing is None or not (module_name + ".").startswith(missing + "."):
        return ""
    return (f" (the module must be importable: for {module_name.replace('.', '/')}.py in the "
            "current folder, run with PYTHONPATH=.)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
