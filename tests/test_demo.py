"""The demo and its report, on a short scenario with an outage (the real one takes a minute)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from edgesplit.cli import main
from edgesplit.core.predictors import Conditions
from edgesplit.edge.measurements import Measurement, read_measurements
from edgesplit.evaluation.demo import Step, run_demo
from edgesplit.evaluation.plots import _ranges
from edgesplit.evaluation.report import Phase, pareto_choice, percent, read_phases, summarise
from edgesplit.measuring.store import read_profile

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
    assert [p.name for p in phases] == ["good", "outage", "cloud restarting", "narrow"]
    assert [p.cloud_up for p in phases] == [True, False, False, True]
    assert [m.seq for m in rows] == list(range(1, len(rows) + 1))  # none lost
    assert all(m.top1_class == 2 for m in rows)  # and every answer right
    good, outage, _, narrow = ([m for m in rows if p.start <= m.time < p.end] for p in phases)
    assert len(good) >= 6 and len(narrow) >= 6
    # Begun after the cloud was killed and ended before it was started again: on the edge.
    down = [m for m in outage if started(m) >= phases[1].start]
    assert len(down) >= 3 and all(m.finished == "edge" for m in down)
    # The next phase began with the restarted cloud ready: the edge offloads again in it.
    assert sum(m.finished == "cloud" for m in narrow) >= 3
    for name in ("summary.md", "timeline.png", "pareto.png", "measurements.csv", "layers.csv"):
        assert (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# edgesplit demo: mnist_cnn")
    assert "| outage | " in summary and "none lost" in summary and "(pareto.png)" in summary
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
