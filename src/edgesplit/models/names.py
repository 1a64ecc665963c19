"""What a model source names, known without loading it (and without importing torch).

A source is a zoo name (``alexnet``), a ``torch.export`` program file (``my_net.pt2``, named
``my_net``) or a Python factory (``package.module:function``, named ``function``).
"""

from __future__ import annotations

from pathlib import Path

from edgesplit.core import zoo
from edgesplit.errors import ModelSourceError, UnknownModel

PROGRAM_SUFFIX = ".pt2"
TORCH_SAVE_SUFFIXES = (".pt", ".pth")
"""What ``torch.save`` files are usually called: named as such when given as a model."""


def is_zoo(source: str) -> bool:
    return source in zoo.MODELS


def model_name(source: str) -> str:
    """The name ``source`` is served, profiled and planned under; UnknownModel if it is none
    of the three kinds."""
    if is_zoo(source):
        return source
    if source.endswith(PROGRAM_SUFFIX):
        return Path(source).stem
    module, _, function = source.rpartition(":")
    if module and function.isidentifier():
        return function
    if Path(source).suffix in TORCH_SAVE_SUFFIXES or Path(source).is_file():
        raise UnknownModel(
            f"{source} is not a torch.export program file (*{PROGRAM_SUFFIX}): edgesplit never "
            "loads torch.save's pickles; save the model with torch.export.save(torch.export."
            f"export(model.eval(), (sample,)), '{Path(source).stem}{PROGRAM_SUFFIX}')")
    raise UnknownModel(
        f"unknown model {source!r}: expected one of {', '.join(zoo.MODELS)}, a torch.export "
        f"program file (*{PROGRAM_SUFFIX}) or a Python factory (package.module:function)")


def check_source(source: str) -> str:
    """``model_name(source)``, once a program file is known to exist (a cheap check before
    anything is loaded)."""
    name = model_name(source)
    if source.endswith(PROGRAM_SUFFIX) and not Path(source).is_file():
        raise ModelSourceError(f"{source}: no such program file")
    return name
