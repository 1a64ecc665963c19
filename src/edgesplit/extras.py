"""Which optional part of edgesplit a third-party module belongs to, and one clear error if absent.

The core (splitting, profiling, planning) installs with ``pip install edgesplit``; the cloud, the
edge, curve fitting and reports each come with an extra (``pip install 'edgesplit[cloud]'``).
Code that imports a module of an extra does it inside ``needs_extra``, which turns the bare
``ModuleNotFoundError`` into one line that names the extra to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec

from edgesplit.errors import MissingExtra

EXTRA_OF_MODULE: dict[str, str] = {
    "scipy": "fit",
    "fastapi": "cloud",
    "uvicorn": "cloud",
    "httptools": "cloud",
    "pydantic_settings": "cloud",
    "prometheus_client": "cloud",
    "httpx": "edge",
    "PIL": "edge",
    "matplotlib": "report",
    "ray": "ray",
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
}
"""Top-level import name -> the extra that installs it (pyproject.toml's optional-dependencies)."""

ALL_EXTRAS = ("fit", "cloud", "edge", "report")
"""What ``edgesplit[all]`` installs: every part of one machine (Ray, for a cluster, is apart)."""


@contextmanager
def needs_extra(purpose: str) -> Iterator[None]:
    """Run imports for ``purpose``; a module of an extra that is not installed raises MissingExtra.

    A missing module that belongs to no extra is a broken install, not a missing option: its
    ``ModuleNotFoundError`` passes through unchanged.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        module = (exc.name or "").partition(".")[0]
        extra = EXTRA_OF_MODULE.get(module)
        if extra is None:
            raise
        raise MissingExtra(
            f"{purpose} needs {module}, which is not installed: "
            f"pip install 'edgesplit[{extra}]' (or 'edgesplit[all]')"
        ) from None


def require_extra(purpose: str, extra: str) -> None:
    """Raise MissingExtra unless every module of ``extra`` (``"all"``: of ``ALL_EXTRAS``) is
    installed. For a command that starts other processes, which would fail one by one later."""
    parts = ALL_EXTRAS if extra == "all" else (extra,)
    wanted = [m for m, e in EXTRA_OF_MODULE.items() if e in parts]
    missing = [m for m in wanted if find_spec(m) is None]
    if missing:
        raise MissingExtra(
            f"{purpose} needs {', '.join(missing)} (not installed): "
            f"pip install 'edgesplit[{extra}]'"
        )
