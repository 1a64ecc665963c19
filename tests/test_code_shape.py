"""House rules that no linter holds: no function over 60 lines without a reason written beside it.

McCabe complexity is ruff's (C901, max 10, in pyproject.toml); this file checks that every
``# noqa: C901`` in ``src/`` says why, and that functions stay short. A function that must stay
longer carries ``# long: <why>`` on its ``def`` line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 60
REASON = re.compile(r"#\s*(?:noqa:\s*C901|long:)\s*(?:-\s*)?(?P<why>.*)$")


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def _reason(line: str, marker: str) -> str | None:
    """The reason written after ``marker`` on ``line``, or None when the marker is absent."""
    if marker not in line:
        return None
    match = REASON.search(line)
    return match.group("why").strip() if match else ""


def _long_functions_without_a_reason(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    found = []
    for node in _functions(path):
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > MAX_LINES and not _reason(lines[node.lineno - 1], "# long:"):
            where = path.relative_to(SRC) if path.is_relative_to(SRC) else path.name
            found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_src_is_over_60_lines_without_a_reason() -> None:
    offenders = [o for path in sorted(SRC.rglob("*.py"))
                 for o in _long_functions_without_a_reason(path)]
    assert offenders == [], "split these, or write '# long: <why>' on the def line"


def test_every_complexity_exemption_says_why() -> None:
    bare = [f"{path.relative_to(SRC)}:{number}"
            for path in sorted(SRC.rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if (why := _reason(line, "noqa: C901")) is not None and len(why.split()) < 3]
    assert bare == [], "write the reason: '# noqa: C901 - <why, in a few words>'"


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    def body(lines: int) -> str:
        return "\n".join(f"    x{i} = {i}" for i in range(lines))

    probe = tmp_path / "probe.py"
    probe.write_text(f"def f() -> None:\n{body(MAX_LINES - 1)}\n")
    assert _long_functions_without_a_reason(probe) == []  # exactly 60 lines: allowed
    probe.write_text(f"def f() -> None:\n{body(MAX_LINES)}\n")
    assert _long_functions_without_a_reason(probe) == ["probe.py:1 f (61 lines)"]
    probe.write_text(f"def f() -> None:  # long: a table kept whole\n{body(MAX_LINES)}\n")
    assert _long_functions_without_a_reason(probe) == []
    assert _reason("def g():  # noqa: C901", "noqa: C901") == ""
    assert _reason("def g():  # noqa: C901 - one dispatch table", "noqa: C901") == (
        "one dispatch table")
