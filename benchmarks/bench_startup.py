"""How long the CLI and the cloud take to start, side by side with Python and with torch's import.

    python benchmarks/bench_startup.py [--repeats 5] [--cloud-models alexnet] [--test-tiers]

Every round runs each case once, in turn, so all cases see the same machine load; the table gives
the median over the rounds and the ratios to ``python -c pass`` and to ``python -c "import
torch"`` (the floor of anything that runs a model). The CLI cases run from a private cache that
holds a profile of AlexNet (measured once before the rounds); the cloud cases time a fresh
``edgesplit cloud serve`` process from its start until ``/v2/health/ready`` answers 200, with the
zoo's weights already cached (the first start on a machine generates them; it is timed apart).
With ``--test-tiers`` the quick test tier (``pytest -m fast``) is a case of every round too, and
the whole suite (``pytest``, minutes) runs once after the rounds, in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PYTHON = sys.executable
SCRIPT = Path(PYTHON).parent / "edgesplit"
EDGESPLIT = [str(SCRIPT)] if SCRIPT.exists() else [PYTHON, "-m", "edgesplit.cli"]
ALL_MODELS = "alexnet,vgg16,mnist_cnn,resnet18"
ROOT = Path(__file__).resolve().parent.parent
PYTEST = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
PLAN = ["plan", "alexnet", "--bandwidth-kbps", "7200", "--rtt-ms", "40", "--clock-ghz", "1.2",
        "--edge", "rent", "--strategy", "weighted"]


def timed_run(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - began


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/v2/health/ready")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def cloud_start(models: str, env: dict[str, str]) -> float:
    """Seconds from starting ``cloud serve`` until it answers ready (then it is stopped)."""
    port = free_port()
    began = time.perf_counter()
    server = subprocess.Popen([*EDGESPLIT, "cloud", "serve", "--port", str(port), "--models",
                               models, "--log-level", "warning"], env=env)
    try:
        while not ready(port):
            if server.poll() is not None:
                raise RuntimeError(f"the cloud exited with code {server.returncode}")
            if time.perf_counter() - began > 300:
                raise RuntimeError("the cloud did not become ready in 300 s")
            time.sleep(0.01)
        return time.perf_counter() - began
    finally:
        server.terminate()
        server.wait()


def cases(env: dict[str, str], cloud_models: list[str],
          test_tiers: bool) -> dict[str, Callable[[], float]]:
    found: dict[str, Callable[[], float]] = {
        "python -c pass": lambda: timed_run([PYTHON, "-c", "pass"], env),
        'python -c "import torch"': lambda: timed_run([PYTHON, "-c", "import torch"], env),
        "edgesplit --help": lambda: timed_run([*EDGESPLIT, "--help"], env),
        "edgesplit --version": lambda: timed_run([*EDGESPLIT, "--version"], env),
        "edgesplit models": lambda: timed_run([*EDGESPLIT, "models"], env),
        "edgesplit plan alexnet ... (cached profile)": lambda: timed_run([*EDGESPLIT, *PLAN],
                                                                         env),
    }
    for models in cloud_models:
        found[f"cloud serve --models {models}: ready"] = (
            lambda models=models: cloud_start(models, env))  # type: ignore[misc]
    if test_tiers:
        found["pytest -m fast (the quick tier)"] = lambda: timed_run([*PYTEST, "-m", "fast"], env)
    return found


def prepare(env: dict[str, str], cloud_models: list[str]) -> list[str]:
    """Profile AlexNet into the private cache; time each cloud's first start (weights made)."""
    subprocess.run([*EDGESPLIT, "profile", "alexnet", "--repeats", "3", "--clocks", "0.9,1.5",
                    "--json"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*EDGESPLIT, *PLAN], env=env, check=True, stdout=subprocess.DEVNULL)
    return [f"first start ever of cloud serve --models {models} (generates and caches the "
            f"weights): {cloud_start(models, env):.2f} s" for models in cloud_models]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cloud-models", default=f"alexnet;{ALL_MODELS}",
                        help="';'-separated model lists to start the cloud with.")
    parser.add_argument("--test-tiers", action="store_true",
                        help="Time the quick test tier every round and the whole suite once.")
    args = parser.parse_args()
    cloud_models = [m for m in args.cloud_models.split(";") if m]
    with tempfile.TemporaryDirectory(prefix="edgesplit-bench-") as cache:
        env = os.environ | {"EDGESPLIT_CACHE_DIR": cache}
        notes = prepare(env, cloud_models)
        runs = cases(env, cloud_models, args.test_tiers)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(run())
        if args.test_tiers:  # minutes: once, after the rounds
            times["pytest, the whole suite (once)"] = [timed_run(PYTEST, env)]
    medians = {name: statistics.median(values) for name, values in times.items()}
    bare, torch_s = medians["python -c pass"], medians['python -c "import torch"']
    print(f"Median of {args.repeats} rounds, every case once per round "
          f"({os.cpu_count()} cores).\n")
    print("| case | median s | min s | x `python -c pass` | x `import torch` |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        print(f"| `{name}` | {medians[name]:.3f} | {min(values):.3f} | "
              f"{medians[name] / bare:.1f} | {medians[name] / torch_s:.2f} |")
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
