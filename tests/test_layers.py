"""The layers of the package and what each may import (docs/design.md, section 7).

Every import in ``src/edgesplit`` is read with ``ast``, at the top of a module, inside a function
(imported when first used) or for type checking alike: an arrow is an arrow. A package may import
itself and the layers its rule names; an import that runs back up, or across (``edge`` and
``cloud`` do not know each other; the testbed and the evaluation start a cloud as a process,
never import it), fails here, with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "edgesplit"
FOUNDATION = {"errors", "extras"}
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "extras": {"errors"},
    "wire": FOUNDATION,
    "core": FOUNDATION | {"wire"},
    "measuring": FOUNDATION | {"wire", "core", "models"},
    "export": FOUNDATION | {"wire", "core"},  # exporting the halves: the edge's engines use it
    "edge": FOUNDATION | {"wire", "core", "measuring", "models", "export"},
    "models": FOUNDATION | {"wire", "core"},  # model files and entry points: reads files
    "cloud": FOUNDATION | {"wire", "core", "models"},
    "testbed": FOUNDATION | {"wire", "core", "measuring", "edge", "models"},
    "evaluation": FOUNDATION | {"wire", "core", "measuring", "edge", "testbed", "models"},
}
"""Layer -> the other layers it may import. Above them all, the command line (``cli``,
``cli_options``, ``cli_testbed``, ``cli_dynamic``, ``cli_export``) and the public face
(``edgesplit/__init__.py``) may import any layer, and no layer may import them."""
TOP = {"cli", "cli_options", "cli_testbed", "cli_dynamic", "cli_export", "__init__"}
NOT_IN_CORE = {"subprocess", "signal", "socket", "threading", "multiprocessing", "asyncio",
               "select", "ctypes", "psutil", "httpx", "fastapi", "uvicorn", "click", "rich",
               "matplotlib"}
"""What ``core`` must not import: processes, signals, sockets, threads, the machine's sensors,
HTTP, the server, the terminal and plotting. It is numbers in, records out (the zoo's weights
and the profile cache's folder name are the only files it knows of)."""


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source`` (a module of ``package``), relative ones
    made absolute."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.append((node.lineno, module))
    return found


def wrong_imports(layer: str, found: list[tuple[int, str]]) -> list[str]:
    """The imports of a module of ``layer`` that its rule does not allow."""
    wrong = []
    for line, module in found:
        parts = module.split(".")
        if parts[0] == "edgesplit" and len(parts) > 1 and parts[1] != layer and (
                parts[1] not in MAY_IMPORT[layer]):
            wrong.append(f"{line}: {module}")
        elif layer == "core" and parts[0] in NOT_IN_CORE:
            wrong.append(f"{line}: {module} (I/O)")
    return wrong


def modules() -> list[tuple[Path, str]]:
    """Every module of the package below the top, with its layer."""
    return [(path, layer_of(path)) for path in sorted(PACKAGE.rglob("*.py"))
            if layer_of(path) not in TOP]


def imports_of(path: Path) -> list[tuple[int, str]]:
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    return imports(path.read_text(), package)


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = {layer_of(path) for path in PACKAGE.rglob("*.py")} - set(MAY_IMPORT) - TOP
    assert unknown == set(), "add the new layer to MAY_IMPORT (and to docs/design.md)"


def test_no_import_runs_back_up_or_across_and_core_does_no_io() -> None:
    wrong = [f"{path.relative_to(SRC)}:{found} ({layer})" for path, layer in modules()
             for found in wrong_imports(layer, imports_of(path))]
    assert wrong == []


def test_the_rules_see_every_kind_of_arrow_that_runs_back_up() -> None:
    source = ("from ..edge.client import CloudClient\nimport subprocess\n\ndef f() -> None:\n"
              "    from edgesplit.measuring import store\n\nfrom . import zoo\n")
    found = imports(source, "edgesplit.core")
    assert wrong_imports("core", found) == ["1: edgesplit.edge.client", "2: subprocess (I/O)",
                                            "5: edgesplit.measuring"]
    assert wrong_imports("measuring", found) == ["1: edgesplit.edge.client"]
    assert wrong_imports("evaluation", found) == []
