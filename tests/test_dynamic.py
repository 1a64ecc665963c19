"""The dynamic suite end to end: a real cloud and edge, a short trace replayed live, the report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from edgesplit.evaluation.runs import COLUMNS

TRACE = {"name": "tiny", "description": "a tenfold step down, then the cloud away and back",
         "duration_s": 40, "points": [
             {"t_s": 0, "bandwidth_kbps": 40000, "rtt_ms": 20},
             {"t_s": 13, "bandwidth_kbps": 4000, "rtt_ms": 60, "clock_ghz": 0.6},
             {"t_s": 27, "bandwidth_kbps": 4000, "rtt_ms": 60, "cloud_up": False},
             {"t_s": 34, "bandwidth_kbps": 40000, "rtt_ms": 20}]}


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgesplit.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ | {"COLUMNS": "200"})


def test_the_dynamic_suite_replays_a_trace_for_every_chooser_and_reports_it(
        tmp_path: Path) -> None:
    trace, out = tmp_path / "tiny.json", tmp_path / "run"
    trace.write_text(json.dumps(TRACE))
    done = _cli("experiment", "--suite", "dynamic", "--quick", "--traces", str(trace),
                "--out", str(out), "--testbed", "userspace", timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out / "runs.csv", newline="") as source:
        rows = list(csv.DictReader(source))
    assert set(COLUMNS) | {"trace", "t_s"} <= set(rows[0])
    assert {r["strategy"] for r in rows} == {"plan-once", "replan", "every", "interval",
                                            "hindsight"}
    assert {r["lost"] for r in rows} == {"0"}  # the edge finished every one through the outage
    away = [r for r in rows if r["cloud_up"] == "0"]
    assert away and all(r["fallback"] for r in away)
    checks = json.loads((out / "config.json").read_text())["self_checks"]
    assert checks[0]["check"] == "bandwidth step" and checks[0]["passed"], checks
    report = _cli("report", str(out), timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    with open(out / "report" / "summary.csv", newline="") as source:
        summary = {r["strategy"]: r for r in csv.DictReader(source)}
    assert float(summary["hindsight"]["latency_regret"]) == 0
    assert float(summary["replan"]["inferences"]) > 5
    assert (out / "report" / "timeline_tiny_rent_OL.png").stat().st_size > 10_000


def test_traces_lists_the_library_and_draws_each(tmp_path: Path) -> None:
    listed = _cli("traces", "--draw", str(tmp_path), "step-down", "outage", timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("step-down") and "The cloud is stopped" in listed.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace_outage.png",
                                                          "trace_step-down.png"]
    every = _cli("traces", timeout=60)
    assert len(every.stdout.splitlines()) == 9
    wrong = _cli("traces", "no-such", timeout=60)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1, wrong.stderr


def test_a_dynamic_folder_without_runs_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"format": "edgesplit-dynamic/1"}))
    done = _cli("report", str(tmp_path), timeout=60)
    assert done.returncode == 2 and "holds no runs.csv or oracle.json" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "report").exists()


def test_edge_run_takes_the_choosers_mode() -> None:
    lines = {mode: [json.loads(line)["replan"] for line in _cli(
        "edge", "run", "--model", "mnist_cnn", "--sample", "--count", "3", "--json",
        "--replan-mode", mode, timeout=120).stdout.splitlines()] for mode in ("every", "once")}
    assert lines == {"every": ["first", "every", "every"], "once": ["first", "", ""]}
