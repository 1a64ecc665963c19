"""What ``edgesplit report`` costs on a long measurement log: time and peak memory.

    python benchmarks/bench_report.py [--rows 200000] [--repeats 3] [--baseline-src DIR]

Writes a log of ``--rows`` inferences (the edge's own columns, values as a long ``edge run``
writes them: ten runs, a few split points and codecs, a tenth finished on the edge), then runs
the real command (``edgesplit report DIR``) on it and on a 1,000-row log of the same kind in
turn, ``--repeats`` rounds, each in its own process. The table gives the median wall time and
the peak resident memory of each (``wait4``'s ``ru_maxrss``), and the long log's ratio to the
short one's: the short log is the command's fixed cost (Python, torch, matplotlib), so the ratio
says what the length adds, measured side by side on one machine. ``--baseline-src`` runs another
version's edgesplit in the same rounds (before and after a change, side by side).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edgesplit.edge.measurements import MEASUREMENT_FIELDS, MEASUREMENTS_FILE

PYTHON = sys.executable


def write_log(directory: Path, rows: int, seed: int = 0) -> Path:
    """A measurement log of ``rows`` plausible inferences in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    path = directory / MEASUREMENTS_FILE
    with open(path, "w", newline="") as sink:
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(MEASUREMENT_FIELDS)
        for i in range(rows):
            writer.writerow(_row(i, rows, rng, start))
    return path


def _row(i: int, rows: int, rng: random.Random, start: datetime) -> list[object]:
    on_edge = rng.random() < 0.1
    edge_s, comm_s, cloud_s = rng.uniform(0.001, 0.02), rng.uniform(0.005, 0.05), 0.004
    if on_edge:
        comm_s = cloud_s = 0.0
    latency = edge_s + comm_s + cloud_s
    values = {
        "seq": i % (rows // 10 or 1) + 1, "run": f"r{i * 10 // rows}",
        "time": (start + timedelta(seconds=i * 0.5)).isoformat(timespec="microseconds"),
        "elapsed_s": round(i * 0.5, 6), "model": "alexnet", "strategy": "rank",
        "weight": 0.5, "edge": "own", "predictor": "profile",
        "codec": rng.choice(["raw", "lz4", "int8"]), "split_point": rng.choice([0, 3, 6, 21]),
        "clock_ghz": 1.5, "bandwidth_kbps": round(rng.uniform(3000, 9000), 3), "rtt_ms": 20.0,
        "predicted_edge_s": edge_s, "predicted_comm_s": comm_s, "predicted_cloud_s": cloud_s,
        "predicted_latency_s": latency * rng.uniform(0.8, 1.2),
        "predicted_cost_usd": 1e-7, "edge_s": edge_s, "comm_s": comm_s,
        "comm_thesis_s": comm_s * 0.9, "cloud_s": cloud_s, "latency_s": latency,
        "cost_usd": 2e-7, "offload_bytes": 0 if on_edge else 36_864,
        "sent_bytes": 0 if on_edge else 9_300, "deadline_s": 0.0,
        "finished": "edge" if on_edge else "cloud",
        "fallback": "offline: the cloud is down" if on_edge else "", "replan": "",
        "top1_class": rng.randrange(1000)}
    return [values[name] for name in MEASUREMENT_FIELDS]


def run_report(directory: Path, source: str | None = None) -> tuple[float, float]:
    """(seconds, peak MiB) of one ``edgesplit report DIR`` in a process of its own (the
    edgesplit in ``source`` when given: another version's ``src`` folder)."""
    report = directory / "report"
    if report.exists():
        shutil.rmtree(report)
    env = os.environ | ({"PYTHONPATH": source} if source else {})
    began = time.perf_counter()
    process = subprocess.Popen([PYTHON, "-m", "edgesplit.cli", "report", str(directory)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        said = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"report failed: {said}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-src", help="Also time the edgesplit in this src folder "
                        "(e.g. `git archive <commit> src | tar -x -C /tmp/base`), in the "
                        "same rounds.")
    args = parser.parse_args()
    versions = {"this": None} | ({"baseline": args.baseline_src} if args.baseline_src else {})
    with tempfile.TemporaryDirectory() as scratch:
        logs = {"1,000 rows": Path(scratch) / "short",
                f"{args.rows:,} rows": Path(scratch) / "long"}
        sizes = {}
        for (name, directory), rows in zip(logs.items(), (1000, args.rows), strict=True):
            sizes[name] = write_log(directory, rows).stat().st_size / 1e6
        results: dict[tuple[str, str], list[tuple[float, float]]] = {
            (version, name): [] for version in versions for name in logs}
        for _ in range(args.repeats):
            for version, source in versions.items():
                for name, directory in logs.items():
                    results[(version, name)].append(run_report(directory, source))
    print("| edgesplit | log | size MB | median s | peak MiB | time vs 1,000 rows | "
          "memory vs 1,000 rows |")
    print("|---|---|---|---|---|---|---|")
    for version in versions:
        short = results[(version, "1,000 rows")]
        base_s = statistics.median(s for s, _ in short)
        base_mib = statistics.median(m for _, m in short)
        for name in logs:
            runs = results[(version, name)]
            seconds = statistics.median(s for s, _ in runs)
            mib = statistics.median(m for _, m in runs)
            print(f"| {version} | {name} | {sizes[name]:.1f} | {seconds:.2f} | {mib:.0f} | "
                  f"{seconds / base_s:.2f}x | {mib / base_mib:.2f}x |")


if __name__ == "__main__":
    main()
