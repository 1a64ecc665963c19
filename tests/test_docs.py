"""The README and docs/*.md keep working: their code runs, their links resolve, their commands
parse, and their figures match what they come from."""

from __future__ import annotations

import doctest
import importlib.util
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import click
import pytest

from edgesplit.cli import app

from .conftest import private_cache_dir

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
BLOCK_TIMEOUT_S = 600  # a block starts a cloud or profiles a small model: seconds, not minutes


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    output: str | None  # the ```text block right after it, if any: what it prints

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = list(FENCE.finditer(text))
    result = []
    for i, m in enumerate(found):
        after = found[i + 1] if i + 1 < len(found) else None
        output = None
        if after and after.group(1) == "text" and not text[m.end():after.start()].strip():
            output = after.group(2)
        result.append(Block(path, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2),
                            output))
    return result


ALL_BLOCKS = [b for path in DOCS for b in blocks(path)]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python"]
SHELL = [b for b in ALL_BLOCKS if b.lang == "sh"]


def prose(path: Path) -> str:
    """The page without its fenced blocks and inline code (where links and headings are)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", path.read_text()))


# --- Python blocks -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def block_env(tmp_path_factory: pytest.TempPathFactory,
              pytestconfig: pytest.Config) -> dict[str, str]:
    """One private cache for every block (profiles made once, the suite's weights), never the
    user's."""
    cache = private_cache_dir(tmp_path_factory, "docs-cache", pytestconfig)
    return {**os.environ, "EDGESPLIT_CACHE_DIR": str(cache)}


def test_the_docs_have_python_blocks_to_run() -> None:
    assert len(PYTHON) >= 4 and all(b.output is not None for b in PYTHON)


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs_and_prints_what_the_docs_show(block: Block,
                                                         block_env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", block.code], cwd=ROOT, env=block_env,
                          capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, f"{block.id} failed:\n{done.stderr[-3000:]}"
    if block.output is not None:
        checker = doctest.OutputChecker()
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        assert checker.check_output(block.output, done.stdout, flags), (
            f"{block.id} printed:\n{done.stdout}\nthe docs show:\n{block.output}")


# --- links ---------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", FENCE.sub("", path.read_text()), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def broken_links(path: Path, text: str) -> list[str]:
    """Each relative link in ``text`` (the prose of ``path``) to a missing file or heading."""
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check offline
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved.relative_to(ROOT)}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    return broken


@pytest.mark.fast
@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_relative_link_resolves(path: Path) -> None:
    broken = broken_links(path, prose(path))
    assert not broken, f"{path.name}: " + "; ".join(broken)


@pytest.mark.fast
def test_the_link_check_can_fail() -> None:
    readme = ROOT / "README.md"
    assert broken_links(readme, "[ok](docs/cli.md#edgesplit-plan) [web](https://x.org/y)") == []
    assert broken_links(readme, "see [a](docs/nothing.md) and [b](docs/cli.md#no-such)") == [
        "docs/nothing.md: no file docs/nothing.md", "docs/cli.md#no-such: no heading #no-such "
        "in cli.md"]


@pytest.mark.fast
def test_slugs_follow_github() -> None:
    assert slug("edgesplit cloud serve") == "edgesplit-cloud-serve"
    assert slug("Throughput against the thesis's design") == "throughput-against-the-thesiss-design"
    assert slug("Accelerators (GPU)") == "accelerators-gpu"


# --- commands in sh blocks -----------------------------------------------------------------

def commands(block: Block) -> list[str]:
    """Each `edgesplit ...` command of a block, continuation lines joined, comments dropped."""
    lines = block.code.replace("\\\n", " ").splitlines()
    found = []
    for line in lines:
        line = line.split(" #", 1)[0]
        at = re.search(r"(^|\s)edgesplit\s", line)
        if at:
            found.append(line[at.end() - len("edgesplit "):].strip())
    return found


def check_command(command: str) -> list[str]:
    """What in one shown command is not in the CLI (empty when it all exists)."""
    cmd: click.Command = app
    names: list[str] = ["edgesplit"]
    problems = []
    for raw in command.split()[1:]:
        token = raw.strip("[]()")
        if not token or token == "|":
            continue
        if token.startswith("-"):
            flag = token.split("=", 1)[0]
            params = cmd.get_params(click.Context(cmd))  # with options made on demand
            if flag not in {o for p in params for o in (*p.opts, *p.secondary_opts)}:
                problems.append(f"`{' '.join(names)}` has no option {flag}")
        elif isinstance(cmd, click.Group):
            choices = token.split("|")
            subs = [cmd.get_command(click.Context(cmd), c) for c in choices]
            missing = [c for c, s in zip(choices, subs, strict=True) if s is None]
            if missing:
                return [f"`{' '.join(names)}` has no command {', '.join(missing)}"]
            cmd, names = subs[0], [*names, choices[0]]  # type: ignore[assignment]
    return problems


@pytest.mark.fast
def test_the_docs_show_commands_to_check() -> None:
    assert sum(len(commands(b)) for b in SHELL) >= 10


@pytest.mark.fast
@pytest.mark.parametrize("block", SHELL, ids=[b.id for b in SHELL])
def test_every_shown_command_and_flag_exists(block: Block) -> None:
    problems = [p for c in commands(block) for p in check_command(c)]
    assert not problems, f"{block.id}: " + "; ".join(problems)


@pytest.mark.fast
def test_every_shown_make_target_exists() -> None:
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M))
    shown = {m for b in SHELL for m in re.findall(r"^make ([\w-]+)", b.code, re.M)}
    assert {"demo", "test"} <= shown and shown <= targets, shown - targets


@pytest.mark.fast
def test_the_command_check_can_fail() -> None:
    assert check_command("edgesplit plan alexnet --weight 0.5") == []
    assert check_command("edgesplit testbed up|down|status [--tag T]") == []
    assert check_command("edgesplit plan alexnet --no-such-flag 1") == [
        "`edgesplit plan` has no option --no-such-flag"]
    assert check_command("edgesplit cloud serv") == ["`edgesplit cloud` has no command serv"]


# --- figures against their sources ---------------------------------------------------------

def _generator() -> ModuleType:
    """scripts/gen_docs_figures.py, which is a script rather than a package module."""
    spec = importlib.util.spec_from_file_location("gen_docs_figures",
                                                  ROOT / "scripts" / "gen_docs_figures.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.fast
def test_figures_from_committed_data_are_up_to_date() -> None:
    gen = _generator()
    results = gen.Results()
    for path in DOCS:
        text = path.read_text()
        assert gen.render(text, results) == text, (
            f"{path.name} is stale: run python scripts/gen_docs_figures.py")
    assert sum(len(gen.REGION.findall(p.read_text())) for p in DOCS) >= 10


@pytest.mark.fast
def test_the_generator_fills_a_region_from_the_data() -> None:
    gen = _generator()
    filled = gen.render("<!-- generated: forward_ms experiment alexnet -->?<!-- /generated -->",
                        gen.Results())
    assert filled == "<!-- generated: forward_ms experiment alexnet -->20.1 ms<!-- /generated -->"


@pytest.mark.fast
def test_the_targets_table_says_met_and_missed_from_the_data(tmp_path: Path) -> None:
    gen = _generator()
    run = tmp_path / "run"
    (run / "report").mkdir(parents=True)
    oracle = [("0", 1, 0.10), ("0", 2, 0.20), ("1", 1, 0.30), ("1", 2, 0.25)]
    (run / "runs.csv").write_text("model,edge,strategy,setting,split_point,latency_s\n" + "".join(
        f"m,{edge},oracle,{setting},{sp},{latency}\n" for setting, sp, latency in oracle
        for edge in ("rent", "own")))
    regret = "m,rent,latency,{note},{chooser},2,{value},{low},{high},0,0,0\n"
    (run / "report" / "regrets.csv").write_text(
        "model,edge,objective,note,chooser,settings,mean_value,mean_low,mean_high,"
        "median_value,median_low,median_high\n"
        + regret.format(note="", chooser="profile OL", value=0.02, low=0.01, high=0.04)
        + regret.format(note="", chooser="thesis OL", value=0.09, low=0.05, high=0.12)
        + regret.format(note="split 2", chooser="all-edge", value=0.06, low=0.03, high=0.08))
    (run / "report" / "prediction-error.csv").write_text(
        "model,predictor,where,n,median,q25,q75\nm,profile,chosen,4,0.12,0.1,0.2\n")
    row = gen.targets(gen.Results(tmp_path), "run").splitlines()[-1]
    assert row == ("| m | yes (1, 2) | met (2.00% [1.00, 4.00]) | missed (upper end 4.00%; "
                   "all-edge split 2 3.00%) | missed (12.0%) |")
    # Paired rows name the registry's first chooser as a: one where profile is b is turned.
    (run / "report" / "paired.csv").write_text(
        "model,edge,objective,a,b,settings,difference_value,difference_low,difference_high,"
        "wins,ties,losses,tie_band\n"
        "m,rent,latency,thesis OL,profile OL,2,0.07,0.04,0.1,0,1,1,0.01\n"
        "m,rent,latency,profile OL,all-edge,2,-0.04,-0.06,0.01,1,1,0,0.01\n"
        "m,rent,latency,profile OL,oracle,2,0.02,0.01,0.04,0,0,2,0.01\n")
    assert gen.pairs(gen.Results(tmp_path), "run", "m", "profile").splitlines()[2:] == [
        "| thesis OL | -7.00 points [-10.00, -4.00] | 1 / 1 / 0 |",
        "| all-edge | -4.00 points [-6.00, +1.00] | 1 / 1 / 0 |"]


@pytest.mark.fast
def test_the_answer_cap_stated_for_alexnet_is_the_clients() -> None:
    from edgesplit.core import zoo
    from edgesplit.edge.client import Expected

    spec = zoo.get_spec("alexnet")
    cap = Expected(outputs=(((1, 1000), "FP32"),), layers=spec.layers).max_response_bytes
    assert f"{cap:,} B for AlexNet" in (ROOT / "docs" / "security.md").read_text()


@pytest.mark.fast
def test_the_stated_mnist_accuracy_is_what_the_shipped_weights_score() -> None:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from edgesplit.core import zoo

    digits = load_digits()  # the split scripts/train_mnist_cnn.py holds out
    _, images, _, labels = train_test_split(digits.images, digits.target, test_size=0.25,
                                            random_state=0, stratify=digits.target)
    spec = zoo.get_spec("mnist_cnn")
    x = torch.cat([zoo.normalise(img.numpy()[None], spec) for img in zoo.digits_to_mnist(images)])
    with torch.inference_mode():
        right = (zoo.build_model("mnist_cnn")(x).argmax(1) == torch.as_tensor(labels)).sum()
    stated = f"**{math.floor(int(right) / len(labels) * 1000 + 0.5) / 10:.1f}% on the " \
             f"{len(labels)} held-out digits**"
    assert stated in (ROOT / "docs" / "architecture.md").read_text()


@pytest.mark.fast
def test_the_package_listing_names_every_module() -> None:
    """docs/architecture.md's tree of src/edgesplit/ names each module of each sub-package."""
    listing = next(b.code for b in blocks(ROOT / "docs" / "architecture.md")
                   if b.code.startswith("src/edgesplit/"))
    missing = []
    for module in sorted((ROOT / "src" / "edgesplit").rglob("*.py")):
        if module.stem.startswith("_"):  # private helpers and package inits
            continue
        if not re.search(rf"\b{re.escape(module.stem)}\b", listing):
            missing.append(str(module.relative_to(ROOT / "src" / "edgesplit")))
    assert not missing, f"not in docs/architecture.md's listing: {missing}"
