"""The CLI stays instant: help, version, models and planning from a cached profile import neither
torch nor scipy. Each command runs in a subprocess where importing them fails, so an import that
creeps back in (at the top of a module the CLI reaches) breaks these tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from edgesplit.cli import app
from edgesplit.cli_options import Writable
from edgesplit.measuring.store import (
    cached_profile_path,
    read_profile,
    store_profile,
    write_profile,
)

BLOCKER = '''
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "scipy"}:
            raise ImportError(f"{name} is blocked: this command must not import it")
        return None

sys.meta_path.insert(0, Blocker())
'''


@pytest.fixture(scope="module")
def blocker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("blocker")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return folder


def run(*args: str, cache: Path, blocked: Path | None) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"EDGESPLIT_CACHE_DIR": str(cache), "COLUMNS": "120"}
    if blocked is not None:
        env["PYTHONPATH"] = str(blocked)
    return subprocess.run([sys.executable, "-m", "edgesplit.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def every_command(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += every_command(command, (*path, name))
    return found


def cache_with(profile_file: Path, folder: Path, remember_laws: bool,
               monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder holding ``profile_file`` as this machine's profile (and its laws)."""
    monkeypatch.setenv("EDGESPLIT_CACHE_DIR", str(folder))
    profile = read_profile(profile_file)
    path = cached_profile_path(profile.model, profile.machine)
    (store_profile if remember_laws else write_profile)(profile, path)
    return folder


def test_the_blocker_blocks(blocker: Path, tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(blocker)}
    result = subprocess.run([sys.executable, "-c", "import torch"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "torch is blocked" in result.stderr


@pytest.mark.parametrize("command", [(), *every_command(app)],
                         ids=lambda c: " ".join(c) or "edgesplit")
def test_every_help_imports_no_torch_or_scipy(command: tuple[str, ...], blocker: Path,
                                              tmp_path: Path) -> None:
    result = run(*command, "--help", cache=tmp_path, blocked=blocker)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and not result.stderr


def test_version_and_models_import_no_torch_or_scipy(blocker: Path, tmp_path: Path) -> None:
    assert run("--version", cache=tmp_path, blocked=blocker).stdout.startswith("edgesplit")
    models = run("models", "--json", cache=tmp_path, blocked=blocker)
    assert models.returncode == 0, models.stderr
    rows = {row["model"]: row for row in json.loads(models.stdout)}
    assert rows["alexnet"]["layers"] == 19 and rows["resnet18"]["split_points"] == 69
    table = run("models", cache=tmp_path, blocked=blocker)
    assert table.returncode == 0 and "61,100,840" in table.stdout


def test_the_package_and_its_planning_names_import_no_torch_or_scipy(blocker: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(blocker)}
    code = ("import edgesplit\nedgesplit.Objective, edgesplit.Conditions, edgesplit.Planner\n"
            "edgesplit.build_planner, edgesplit.Profile, edgesplit.EdgesplitError")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("predictor", ["profile", "thesis"])
def test_a_plan_from_a_stored_profile_imports_no_torch_or_scipy(
        predictor: str, mnist_profile_file: Path, blocker: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = cache_with(mnist_profile_file, tmp_path / "cache", True, monkeypatch)
    args = ("plan", "mnist_cnn", "--predictor", predictor, "--edge", "rent")
    as_json = run(*args, "--json", cache=cache, blocked=blocker)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["predictor"] == predictor
    table = run(*args, cache=cache, blocked=blocker)
    assert table.returncode == 0 and "split after layer" in table.stdout, table.stderr


def test_remembered_laws_plan_exactly_as_a_fresh_fit(mnist_profile_file: Path, blocker: Path,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The first plan from a cache without laws fits them (scipy) and remembers them; a plan
    that can only read them prints the very same bytes."""
    cache = cache_with(mnist_profile_file, tmp_path / "cache", False, monkeypatch)
    args = ("plan", "mnist_cnn", "--predictor", "thesis", "--strategy", "weighted", "--json")
    blocked_first = run(*args, cache=cache, blocked=blocker)
    assert blocked_first.returncode != 0 and "scipy is blocked" in blocked_first.stderr
    fitted = run(*args, cache=cache, blocked=None)
    assert fitted.returncode == 0, fitted.stderr
    assert (cache / "laws.json").exists()
    remembered = run(*args, cache=cache, blocked=blocker)
    assert remembered.returncode == 0, remembered.stderr
    assert remembered.stdout == fitted.stdout


# Path options that a command only reads (exists=True ones need no listing): every other path
# option must be a Writable, which is checked when parsed, before the command does anything.
READ_ONLY = {"--input", "--profile", "--cloud-profile", "--clock-file", "--token-file",
             "--hmac-key-file", "--hmac-keys", "--tls-cert", "--tls-key"}
# What each command needs besides the path, so that only the path is wrong.
REQUIRED = {"profile": ["mnist_cnn"], "edge run": ["--model", "mnist_cnn", "--sample"],
            "experiment": ["--quick"], "export": ["--model", "mnist_cnn", "--split-point", "4"]}


def path_options(command_path: tuple[str, ...]) -> list[click.Option]:
    """The options of a command that take a path (their type a click.Path)."""
    command: click.Command = app
    for name in command_path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return [p for p in command.get_params(click.Context(command))
            if isinstance(p, click.Option) and isinstance(p.type, click.Path)]


WRITTEN = [(command, option.opts[0], option.type.dir_okay)
           for command in every_command(app) for option in path_options(command)
           if isinstance(option.type, Writable)]


def test_every_path_a_command_writes_is_checked_when_parsed() -> None:
    assert {(" ".join(c), flag) for c, flag, _ in WRITTEN} == {
        ("profile", "--out"), ("demo", "--out"), ("report", "--out"), ("experiment", "--out"),
        ("edge run", "--log"), ("traces", "--draw"), ("export", "--out")}
    for command in every_command(app):
        for option in path_options(command):
            assert isinstance(option.type, click.Path)
            assert (isinstance(option.type, Writable) or option.type.exists
                    or option.opts[0] in READ_ONLY), (command, option.opts[0])


@pytest.mark.parametrize("where", ["below a file", "in /proc"])
@pytest.mark.parametrize(("command", "flag", "folder"), WRITTEN,
                         ids=[f"{' '.join(c)} {flag}" for c, flag, _ in WRITTEN])
def test_an_unwritable_path_is_one_line_before_any_work(
        command: tuple[str, ...], flag: str, folder: bool, where: str, blocker: Path,
        tmp_path: Path) -> None:
    """One line and exit 2, before anything is measured or started: torch is blocked, so a
    command that got as far as measuring would fail differently."""
    (tmp_path / "a-file").write_text("")
    base = tmp_path / "a-file" if where == "below a file" else Path("/proc")
    bad = base / "new" / ("out" if folder else "out.json")
    args = [*command, *REQUIRED.get(" ".join(command), [str(tmp_path)] * (command == ("report",))),
            flag, str(bad)]
    result = run(*args, cache=tmp_path / "cache", blocked=blocker)
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"edgesplit: error: Invalid value for '{flag}': cannot "
                                    f"write '{bad}' (")
    assert sorted(tmp_path.iterdir()) == [tmp_path / "a-file"]  # nothing made, nothing left


def test_unwritable_default_places_are_one_line_before_any_work(blocker: Path,
                                                                tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"
    for args in (("profile", "mnist_cnn"), ("plan", "mnist_cnn")):  # the cache, then measuring
        result = run(*args, cache=cache, blocked=blocker)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"edgesplit: error: cannot write {cache}/profiles (Not a "
                                        "directory): set EDGESPLIT_CACHE_DIR")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "report").write_text("")  # where the report would go by default
    result = run("report", str(logs), cache=tmp_path, blocked=blocker)
    assert result.returncode == 2
    assert result.stderr == f"edgesplit: error: cannot write {logs}/report (Not a directory): " \
        "give --out DIR\n"
    env = os.environ | {"EDGESPLIT_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(blocker)}
    demo = subprocess.run([sys.executable, "-m", "edgesplit.cli", "demo"], cwd="/proc", env=env,
                          capture_output=True, text=True, timeout=120)  # its folder goes here
    assert demo.returncode == 2
    assert demo.stderr == "edgesplit: error: cannot write /proc (No such file or directory): " \
        "give --out DIR\n"
