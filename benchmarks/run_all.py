"""Every benchmark, one after another, into one results file.

    python benchmarks/run_all.py [--out benchmark-results.md] [--quick] [--only throughput,fleet]

Runs each ``bench_*.py`` of this folder as its own process (so one's threads and servers cannot
skew the next), with the arguments below, and writes what each printed under its command, with
the machine and the time, to ``--out``. ``--quick`` shortens every run (for a smoke test; the
README's figures come from a full run). Every comparison inside a benchmark is measured side by
side in that benchmark's one run, so its ratios hold even though this machine's speed drifts.
A benchmark that fails is reported as failed in the file and the rest still run.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

from edgesplit.measuring.machine import describe_machine

HERE = Path(__file__).parent

# name: (full arguments, quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "planning": ([], ["--runs", "2000", "--model", "mnist_cnn", "--models", "mnist_cnn,alexnet"]),
    "codecs": ([], ["--models", "mnist_cnn"]),
    "overhead": ([], ["--runs", "50"]),
    "throughput": ([], ["--seconds", "1", "--concurrency", "1,8"]),
    "batching": ([], ["--rounds", "2", "--seconds", "1"]),
    "load": ([], ["--duration", "5", "--overload-duration", "3"]),
    "fleet": ([], ["--edges", "100,1000", "--duration", "20"]),
    "loadaware": ([], ["--inferences", "20", "--load-edges", "8"]),
    "startup": ([], ["--repeats", "1", "--cloud-models", "alexnet"]),
    "reconnect": ([], ["--restarts", "1"]),
    "attacks": ([], ["--header-mib", "16", "--requests", "50", "--connections", "300"]),
    "report": ([], ["--rows", "20000", "--repeats", "1"]),
    "engines": ([], ["--models", "mnist_cnn", "--cuts", "0.5", "--rounds", "3"]),
}


def run_one(name: str, args: list[str]) -> tuple[str, str, float, bool]:
    command = [sys.executable, str(HERE / f"bench_{name}.py"), *args]
    shown = " ".join(["python", f"benchmarks/bench_{name}.py", *args])
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
    output = done.stdout if done.returncode == 0 else (
        done.stdout + f"\n**failed** (exit {done.returncode}):\n\n```\n"
        + "\n".join(done.stderr.splitlines()[-20:]) + "\n```\n")
    return shown, output, time.monotonic() - began, done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmark-results.md"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    args = parser.parse_args()
    names = args.only.split(",")
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: expected some of "
                     f"{', '.join(BENCHMARKS)}")
    machine = describe_machine(1)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [f"# edgesplit benchmarks, {started}\n\n{machine.cpu}, {machine.cores} cores, "
                f"{machine.clock_ghz:.2f} GHz, torch {machine.torch}, Python "
                f"{machine.python}{' (quick run)' if args.quick else ''}\n"]
    failed = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        shown, output, seconds, ok = run_one(name, BENCHMARKS[name][1 if args.quick else 0])
        if not ok:
            failed.append(name)
        sections.append(f"## {name}\n\n`{shown}` ({seconds:.0f} s)\n\n{output.strip()}\n")
        args.out.write_text("\n".join(sections))  # what finished is kept if a later one hangs
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""),
          file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
