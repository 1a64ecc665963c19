"""Optional parts: a missing extra is one line naming it, and each slim install really works."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edgesplit.core import zoo
from edgesplit.core.fitting import fit_power_law
from edgesplit.errors import MissingExtra
from edgesplit.extras import ALL_EXTRAS, EXTRA_OF_MODULE, needs_extra
from edgesplit.testbed.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
IMPORT_NAME = {"pillow": "PIL"}  # distribution -> top-level module, where they differ
# Run in a child Python: make importing the named modules fail as if they were not installed.
BLOCKER = ("import sys\nfor name in sys.argv.pop(1).split(','):\n    sys.modules[name] = None\n"
           "from edgesplit.cli import main\nsys.exit(main())")


def _optional_dependencies() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    return extras


def _module_of(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert name is not None, requirement
    distribution = name.group(0).lower()
    return IMPORT_NAME.get(distribution, distribution.replace("-", "_"))


def test_every_module_of_an_extra_names_the_extra_pyproject_lists_it_in() -> None:
    listed = {_module_of(req): extra for extra, reqs in _optional_dependencies().items()
              if extra not in ("all", "dev") for req in reqs if not req.startswith("edgesplit")}
    imported = {"uvloop"}  # uvicorn picks it up itself; we never import it
    assert {m: e for m, e in listed.items() if m not in imported} == EXTRA_OF_MODULE


def _included(extras: dict[str, list[str]], extra: str) -> set[str]:
    """``extra`` and every extra it pulls in through ``edgesplit[...]``."""
    found = {extra}
    for requirement in extras[extra]:
        if requirement.startswith("edgesplit["):
            for part in requirement[len("edgesplit["):-1].split(","):
                found |= _included(extras, part)
    return found


def test_all_is_every_part_of_one_machine_and_dev_holds_it() -> None:
    extras = _optional_dependencies()
    assert _included(extras, "all") - {"all"} == set(ALL_EXTRAS)
    assert {"all", *ALL_EXTRAS} <= _included(extras, "dev")


def test_a_missing_module_of_an_extra_is_one_line_naming_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.raises(MissingExtra) as caught:
        fit_power_law([0.5, 1.0, 2.0], [4.0, 2.0, 1.0])
    message = str(caught.value)
    assert message == ("fitting a clock-speed law needs scipy, which is not installed: "
                       "pip install 'edgesplit[fit]' (or 'edgesplit[all]')")
    assert isinstance(caught.value, ImportError)


def test_a_missing_module_of_no_extra_is_left_as_it_is() -> None:
    with pytest.raises(ModuleNotFoundError) as caught, needs_extra("anything"):
        import edgesplit_no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert not isinstance(caught.value, MissingExtra)


@pytest.mark.parametrize(("blocked", "args", "extra"), [
    ("fastapi", ["cloud", "serve", "--models", "mnist_cnn"], "cloud"),
    ("httpx", ["edge", "run", "--cloud", "http://127.0.0.1:9", "--model", "mnist_cnn",
               "--sample"], "edge"),
    ("matplotlib,matplotlib.pyplot", ["report", "LOG"], "report"),
    ("uvicorn", ["demo"], "all"),  # before it starts anything
])
def test_a_command_without_its_extra_says_which_to_install(
        blocked: str, args: list[str], extra: str, tmp_path: Path) -> None:
    if args[-1] == "LOG":
        args[-1] = str(_a_measurement_log(tmp_path))
    done = subprocess.run([sys.executable, "-c", BLOCKER, blocked, *args], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("edgesplit: error: ")
    assert f"pip install 'edgesplit[{extra}]'" in lines[0]


def _a_measurement_log(tmp_path: Path) -> Path:
    """A log of one inference, with the edge's profile beside it (so a report plans too)."""
    from edgesplit.edge.measurements import MeasurementLog
    from edgesplit.evaluation.report import PROFILE_FILE
    from edgesplit.measuring.store import write_profile

    from .helpers import make_profile, measurement

    log_dir = tmp_path / "log"
    with MeasurementLog(log_dir) as log:
        log.append(measurement(1, latency_s=0.02, predicted_latency_s=0.025, split_point=1,
                               bandwidth_kbps=7200.0, rtt_ms=40.0, clock_ghz=1.5))
    write_profile(make_profile("m"), log_dir / PROFILE_FILE)
    return log_dir


def test_a_report_needs_neither_the_edge_nor_the_cloud_nor_fitting(tmp_path: Path) -> None:
    """``edgesplit report`` plans (its Pareto plot) with the report extra alone: planning is
    the core's, not the edge's, so httpx is not needed (it once was)."""
    log_dir = _a_measurement_log(tmp_path)
    done = subprocess.run([sys.executable, "-c", BLOCKER, "httpx,fastapi,uvicorn,scipy",
                           "report", str(log_dir)], capture_output=True, text=True,
                          timeout=300, check=False, env=os.environ | {
                              "EDGESPLIT_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert {"summary.md", "timeline.png", "pareto.png"} <= {
        p.name for p in (log_dir / "report").iterdir()}


# -- slim installs: a fresh venv with one extra, and a real command run in it -------------------


def _slim_venv(tmp_path: Path, extra: str) -> Path:
    """A venv with ``edgesplit[extra]`` only, installed the way a user would (no editable).
    Without byte-compiling every installed file (half the install's 35 s here): Python compiles
    what a command imports when it first runs, which is all these tests use."""
    env_dir = tmp_path / f"venv-{extra}"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-compile", "-c", ROOT / "constraints.txt", f"{ROOT}[{extra}]"],
                   check=True, timeout=1500, env=os.environ | {"PIP_NO_INPUT": "1"})
    return env_dir


def _has(env_dir: Path, module: str) -> bool:
    python = env_dir / "bin" / "python"
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", probe], check=False, timeout=120).returncode == 0


def _site_packages_mb(env_dir: Path) -> float:
    files = (env_dir / "lib").rglob("*")
    return sum(f.stat().st_size for f in files if f.is_file()) / 1e6


@pytest.mark.slow
def test_a_slim_edge_install_runs_the_edge_and_names_the_cloud_extra(tmp_path: Path) -> None:
    env_dir = _slim_venv(tmp_path, "edge")
    assert [m for m in ("fastapi", "uvicorn", "matplotlib") if _has(env_dir, m)] == []
    assert _has(env_dir, "httpx") and _has(env_dir, "scipy")
    edgesplit = env_dir / "bin" / "edgesplit"
    env = os.environ | {"EDGESPLIT_CACHE_DIR": str(tmp_path / "cache")}
    # No cloud listens on this port: the edge finishes the inference itself and says so.
    done = subprocess.run([edgesplit, "edge", "run", "--cloud", f"http://127.0.0.1:{free_port()}",
                           "--model", "mnist_cnn", "--sample", "--count", "1", "--json"],
                          capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stderr
    [row] = [json.loads(line) for line in done.stdout.splitlines()]
    assert (row["finished"], row["top1_class"]) == ("edge", 2)  # the sample digit is a 2
    refused = subprocess.run([edgesplit, "cloud", "serve"], capture_output=True, text=True,
                             timeout=300, env=env, check=False)
    assert refused.returncode == 2
    assert "pip install 'edgesplit[cloud]'" in refused.stderr
    print(f"edgesplit[edge]: {_site_packages_mb(env_dir):.0f} MB")


@pytest.mark.slow
def test_a_slim_report_install_writes_a_report(tmp_path: Path) -> None:
    env_dir = _slim_venv(tmp_path, "report")
    assert [m for m in ("httpx", "fastapi", "uvicorn", "scipy") if _has(env_dir, m)] == []
    assert _has(env_dir, "matplotlib")
    log_dir = _a_measurement_log(tmp_path)
    done = subprocess.run([env_dir / "bin" / "edgesplit", "report", str(log_dir)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env=os.environ | {"EDGESPLIT_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert {"summary.md", "timeline.png", "pareto.png"} <= {
        p.name for p in (log_dir / "report").iterdir()}
    print(f"edgesplit[report]: {_site_packages_mb(env_dir):.0f} MB")


@pytest.mark.slow
def test_a_slim_cloud_install_serves_and_names_the_edge_extra(tmp_path: Path) -> None:
    env_dir = _slim_venv(tmp_path, "cloud")
    assert [m for m in ("scipy", "httpx", "PIL", "matplotlib") if _has(env_dir, m)] == []
    edgesplit = env_dir / "bin" / "edgesplit"
    port = free_port()
    server = subprocess.Popen([edgesplit, "cloud", "serve", "--port", str(port),
                               "--models", "mnist_cnn"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        answer = _infer_when_ready(f"http://127.0.0.1:{port}", server)
        assert int(np.argmax(answer["outputs"][0]["data"])) == 2  # the sample digit is a 2
    finally:
        server.terminate()
        server.wait(timeout=60)
    refused = subprocess.run([edgesplit, "edge", "run", "--cloud", f"http://127.0.0.1:{port}",
                              "--model", "mnist_cnn", "--sample"], capture_output=True,
                             text=True, timeout=300, check=False)
    assert refused.returncode == 2
    assert "pip install 'edgesplit[edge]'" in refused.stderr
    print(f"edgesplit[cloud]: {_site_packages_mb(env_dir):.0f} MB")


def _infer_when_ready(url: str, server: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait (up to 5 minutes, on events) for readiness, then run one whole inference."""
    for _ in range(600):
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        try:
            server.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue
    pixels = zoo.sample_input("mnist_cnn")
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(pixels.shape),
                        "data": pixels.reshape(-1).tolist()}]}
    response = httpx.post(f"{url}/v2/models/mnist_cnn/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer
