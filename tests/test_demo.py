"""The demo and its report, on a short scenario with an outage (the real one takes a minute)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from edgesplit.cli import main
from edgesplit.core.planning import Objective
from edgesplit.core.predictors import Conditions
from edgesplit.edge.measurements import Measurement, read_measurements
from edgesplit.evaluation.demo import EDGE_CODECS, Step, edge_differs, run_demo
from edgesplit.evaluation.plots import _ranges
from edgesplit.evaluation.report import (
    OUTSIDE,
    Phase,
    off_front_reason,
    outcome,
    pareto_choice,
    percent,
    read_phases,
    summarise,
)
from edgesplit.measuring.machine import describe_machine
from edgesplit.measuring.store import (
    cached_planner,
    cached_profile_path,
    read_profile,
    store_profile,
)

from .helpers import measurement


def started(m: Measurement) -> str:
    """When an inference began (its log time is when it ended)."""
    return (datetime.fromisoformat(m.time) - timedelta(seconds=m.latency_s)).isoformat(
        timespec="milliseconds")


def test_a_short_demo_runs_end_to_end_and_writes_its_report(mnist_profile_file: Path,
                                                             tmp_path: Path) -> None:
    # Phases are counted in inferences, so a busy machine makes this longer, never different.
    scenario = [Step("good", 6, 20_000, 10, 1.5), Step("outage", 4, 20_000, 10, 1.5, False),
                Step("narrow", 6, 300, 80, 0.9, offloads=3)]
    with open(tmp_path / "console.txt", "w") as console_file:
        out = run_demo(model="mnist_cnn", out_dir=tmp_path / "report", scenario=scenario,
                       interval_s=0.3, profile=read_profile(mnist_profile_file),
                       console=Console(file=console_file, width=80))
    rows = read_measurements(out)
    phases = read_phases(out)
    assert [p.name for p in phases] == ["start-up", "good", "outage", "cloud restarting",
                                        "narrow"]
    assert [p.cloud_up for p in phases] == [True, True, False, False, True]
    assert [m.seq for m in rows] == list(range(1, len(rows) + 1))  # none lost
    assert all(m.top1_class == 2 for m in rows)  # and every answer right
    start_up, good, outage, _, narrow = ([m for m in rows if p.start <= m.time < p.end]
                                         for p in phases)
    # The first inference runs before phase 1 begins: the start-up phase holds it, so the
    # phases' rows add up to the whole log.
    assert [m.seq for m in start_up] == [1]
    assert sum(s.inferences for s in summarise(rows, phases)) == len(rows)
    assert len(good) >= 6 and len(narrow) >= 6
    # Begun after the cloud was killed and ended before it was started again: on the edge.
    down = [m for m in outage if started(m) >= phases[2].start]
    assert len(down) >= 3 and all(m.finished == "edge" for m in down)
    # The next phase began with the restarted cloud ready: the edge offloads again in it.
    assert sum(m.finished == "cloud" for m in narrow) >= 3
    for name in ("summary.md", "timeline.png", "pareto.png", "measurements.csv", "layers.csv"):
        assert (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# edgesplit demo: mnist_cnn")
    assert "| outage | " in summary and "none lost" in summary and "(pareto.png)" in summary
    assert f"{len(rows)} inferences, " in summary and "synthetic" not in summary
    assert "| start-up | 20000 kbit/s, RTT 10 ms, " in summary  # at the machine's own clock
    assert "(the edge's launch to phase 1: its first inference" in summary
    outage_row = [line for line in summary.splitlines() if line.startswith("| outage |")][-1]
    assert outage_row.split(" | ")[-2] == "-"  # no prediction error where nothing was offloaded
    console = (tmp_path / "console.txt").read_text()
    # Not a terminal: a line per phase and per inference (not the live table's last frame),
    # none broken at 80 columns, and the summary's title on a line of its own.
    assert "phase 2/3: outage: true 20000 kbit/s, RTT 10 ms, 1.5 GHz, cloud down\n" in console
    assert "cloud restarting: true 20000 kbit/s" in console
    assert re.search(r"\n  #\d+ split \d+ \S+ -> edge: \d+ ms \(predicted \d+\); edge believes "
                     r"\d+ kbit/s, RTT \d+ ms, [\d.]+ GHz\n", console)
    assert re.search(r"\n\s*summary per phase\s*\n", console)
    assert re.search(r"\n│ cloud restarting │ \d+ ", console)
    # `edgesplit report` on the demo's folder writes a folder of its own, leaving the demo's.
    before = {name: (out / name).read_bytes() for name in ("summary.md", "timeline.png")}
    assert main(["report", str(out)]) == 0
    assert {name: (out / name).read_bytes() for name in before} == before
    again = (out / "report" / "summary.md").read_text()
    assert "(pareto.png)" in again and (out / "report" / "pareto.png").stat().st_size > 0


@pytest.mark.fast
def test_the_pareto_plot_shows_what_the_edge_ran() -> None:
    rows = [measurement(1, time="2026-01-01T00:00:01", finished="edge", split_point=9),
            measurement(2, time="2026-01-01T00:00:02", codec="int8+zstd", split_point=3,
                        bandwidth_kbps=1000, rtt_ms=40, clock_ghz=1.5, strategy="rank",
                        weight=0.5, edge="rent"),
            measurement(3, time="2026-01-01T00:00:03", codec="raw", split_point=3,
                        bandwidth_kbps=3000, rtt_ms=60, clock_ghz=1.5),
            measurement(4, time="2026-01-01T00:00:04", codec="raw", split_point=5,
                        bandwidth_kbps=2000, rtt_ms=50, clock_ghz=1.5)]
    phases = [Phase("down", "2026-01-01T00:00:00", "2026-01-01T00:00:02", 1, 1, 1, False),
              Phase("up", "2026-01-01T00:00:02", "2026-01-01T00:00:09", 1, 1, 1)]
    choice = pareto_choice(rows, phases)
    assert choice is not None
    assert (choice.phase, choice.split_point, choice.codecs) == ("up", 3, ("int8+zstd", "raw"))
    assert choice.conditions == Conditions(2000, 50, 1.5)  # medians of what the edge believed
    assert (str(choice.objective.strategy), choice.objective.weight) == ("rank", 0.5)
    assert pareto_choice(rows[:1], phases) is None  # nothing offloaded, nothing to show


@pytest.mark.fast
def test_clustered_split_point_labels_read_as_ranges() -> None:
    assert _ranges([9, 3, 4, 5, 7]) == "3-5, 7, 9"
    assert _ranges([17, 18]) == "17-18"


@pytest.mark.fast
def test_summaries_split_measurements_by_phase() -> None:
    rows = [measurement(1, time="2026-01-01T00:00:01", latency_s=0.1, predicted_latency_s=0.1),
            measurement(2, time="2026-01-01T00:00:05", latency_s=0.2, predicted_latency_s=0.1),
            measurement(3, time="2026-01-01T00:00:06", latency_s=0.4, predicted_latency_s=0.2,
                        finished="edge"),
            measurement(4, time="2026-01-01T00:00:10", latency_s=0.4, predicted_latency_s=0.2,
                        finished="edge")]
    phases = [Phase("a", "2026-01-01T00:00:00", "2026-01-01T00:00:04", 1, 1, 1),
              Phase("b", "2026-01-01T00:00:04", "2026-01-01T00:00:09", 1, 1, 1),
              Phase("c", "2026-01-01T00:00:09", "2026-01-01T00:00:19", 1, 1, 1, False)]
    a, b, c = summarise(rows, phases)
    assert c.prediction_error is None and percent(c.prediction_error) == "-"  # no offloads
    assert (a.inferences, b.inferences, b.in_cloud, b.on_edge) == (1, 2, 1, 1)
    assert a.prediction_error == 0
    assert b.prediction_error == pytest.approx(0.5)  # only offloads count: 0.1 vs 0.2
    assert b.median_latency_s == pytest.approx(0.3)
    assert b.split_points == "3 (2)"


def test_a_demo_interrupted_with_ctrl_c_still_writes_its_report(
        mnist_profile_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C on a terminal: SIGINT to the demo's whole process group (its cloud and edge too),
    a few inferences in."""
    monkeypatch.setenv("EDGESPLIT_CACHE_DIR", str(tmp_path / "cache"))
    profile = read_profile(mnist_profile_file)  # as this machine's: the demo profiles nothing
    store_profile(profile, cached_profile_path(profile.model, describe_machine(1)))
    out = tmp_path / "report"
    demo = subprocess.Popen([sys.executable, "-m", "edgesplit.cli", "demo", "--model",
                             "mnist_cnn", "--out", str(out)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / "measurements.csv").exists() or len(read_measurements(out)) < 4:
            assert demo.poll() is None and time.monotonic() < deadline, demo.communicate()
            time.sleep(0.2)
        os.killpg(demo.pid, signal.SIGINT)
        stdout, stderr = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 130, stderr
    assert "edgesplit: interrupted" in stderr
    assert re.search(r"interrupted: the report covers what ran so far: \S+summary.md \(run "
                     r"`edgesplit report \S+` to redraw it\)", " ".join(stdout.split())), stdout
    phases = read_phases(out)
    assert phases[0].name == "start-up" and phases[-1].name.endswith(" (interrupted)")
    rows = read_measurements(out)
    assert len(rows) >= 4 and sum(s.inferences for s in summarise(rows, phases)) == len(rows)
    for name in ("summary.md", "timeline.png"):
        assert (out / name).stat().st_size > 0, name
    assert f"{len(rows)} inferences" in (out / "summary.md").read_text()
    # Nothing of the demo's is left running: the cloud and the edge went with it.
    for _ in range(100):
        try:
            os.killpg(demo.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the demo's cloud or edge outlived it")
    # And `edgesplit report` redraws it, as the demo said.
    assert main(["report", str(out)]) == 0
    assert (out / "report" / "timeline.png").stat().st_size > 0


@pytest.mark.fast
def test_each_inference_outcome_is_told_apart_for_the_timeline() -> None:
    timeout = "the cloud at http://x did not answer within 1.00 s"
    rows = [measurement(1), measurement(2, finished="edge", fallback=timeout),
            measurement(3, finished="edge", fallback=f"offline: {timeout}"),
            measurement(4, finished="edge", fallback="the cloud answered 503: busy"),
            measurement(5), measurement(6)]
    assert [outcome(m, rows[i - 1] if i else None) for i, m in enumerate(rows)] == [
        "offloaded", "timed out", "offline", "fell back", "resumed", "offloaded"]


@pytest.mark.fast
def test_measurements_outside_every_phase_get_a_row_of_their_own() -> None:
    rows = [measurement(1, time="2026-01-01T00:00:01"), measurement(2, time="2026-01-01T00:00:05"),
            measurement(3, time="2026-01-01T00:00:12")]
    phases = [Phase("a", "2026-01-01T00:00:04", "2026-01-01T00:00:09", 1, 1, 1)]
    summaries = summarise(rows, phases)
    assert [(s.phase, s.inferences) for s in summaries] == [("a", 1), (OUTSIDE, 2)]
    assert sum(s.inferences for s in summaries) == len(rows)


def test_an_edge_split_off_the_front_is_explained(mnist_profile_file: Path) -> None:
    planner = cached_planner("mnist_cnn", read_profile(mnist_profile_file),
                             Objective("rank", 0.5, "rent"), codecs=EDGE_CODECS)
    plan = planner.plan(Conditions(1000, 50, 1.5))
    best = plan.split_point
    assert off_front_reason(plan, plan.pareto[0]) == ""
    row = {"split_point": best, "finished": "cloud", "fallback": ""}
    assert edge_differs(row, plan) == f"the edge runs rank's choice, split {best}"
    near = [c.split_point for c in plan.candidates if c.split_point != best
            and c.latency_s <= plan.chosen.latency_s / 0.95
            and c.cost_usd <= plan.chosen.cost_usd / 0.95]
    far = [c.split_point for c in plan.candidates if c.split_point not in plan.pareto
           and c.split_point not in near and c.split_point != best]
    for sp in near:
        assert "hysteresis kept it" in off_front_reason(plan, sp) or sp in plan.pareto
        assert "hysteresis" in edge_differs(row | {"split_point": sp}, plan)
    for sp in far:
        assert "what it had learned" in off_front_reason(plan, sp)
        assert "until its next re-plan" in edge_differs(row | {"split_point": sp}, plan)
    assert near or far  # something to explain
    offline = row | {"finished": "edge", "fallback": "offline: the cloud is down"}
    assert "runs everything itself" in edge_differs(offline, plan)
