"""The demo and its report, on a short scenario with an outage (the real one takes a minute)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from edgesplit.core.profiles import read_profile
from edgesplit.edge.measurements import read_measurements
from edgesplit.testbed.demo import Step, run_demo
from edgesplit.testbed.report import Phase, read_phases, summarise

from .helpers import measurement


def test_a_short_demo_runs_end_to_end_and_writes_its_report(mnist_profile_file: Path,
                                                             tmp_path: Path) -> None:
    scenario = [Step("good", 4, 20_000, 10, 1.5), Step("outage", 3, 20_000, 10, 1.5, False),
                Step("narrow", 6, 300, 80, 0.9)]
    with open(tmp_path / "console.txt", "w") as console_file:
        out = run_demo(model="mnist_cnn", out_dir=tmp_path / "report", scenario=scenario,
                       interval_s=0.3, profile=read_profile(mnist_profile_file),
                       console=Console(file=console_file))
    rows = read_measurements(out)
    phases = read_phases(out)
    assert [p.name for p in phases] == ["good", "outage", "narrow"]
    assert [p.cloud_up for p in phases] == [True, False, True]
    assert len(rows) >= 20
    assert [m.seq for m in rows] == list(range(1, len(rows) + 1))  # none lost
    assert all(m.prediction == 2 for m in rows)  # and every answer right
    during_outage = [m for m in rows if phases[1].start <= m.time < phases[1].end]
    assert during_outage and all(m.finished == "edge" for m in during_outage)
    assert any(m.finished == "cloud" for m in rows if m.time >= phases[2].start)
    for name in ("summary.md", "timeline.png", "pareto.png", "measurements.csv", "layers.csv"):
        assert (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    assert "| outage | " in summary and "none lost" in summary
    console = (tmp_path / "console.txt").read_text()
    assert "summary per phase" in console


def test_summaries_split_measurements_by_phase() -> None:
    rows = [measurement(1, time="2026-01-01T00:00:01", latency_s=0.1, predicted_latency_s=0.1),
            measurement(2, time="2026-01-01T00:00:05", latency_s=0.2, predicted_latency_s=0.1),
            measurement(3, time="2026-01-01T00:00:06", latency_s=0.4, predicted_latency_s=0.2,
                        finished="edge")]
    phases = [Phase("a", "2026-01-01T00:00:00", "2026-01-01T00:00:04", 1, 1, 1),
              Phase("b", "2026-01-01T00:00:04", "2026-01-01T00:00:09", 1, 1, 1)]
    a, b = summarise(rows, phases)
    assert (a.inferences, b.inferences, b.in_cloud, b.on_edge) == (1, 2, 1, 1)
    assert a.prediction_error == 0
    assert b.prediction_error == pytest.approx(0.5)  # only offloads count: 0.1 vs 0.2
    assert b.median_latency_s == pytest.approx(0.3)
    assert b.split_points == "3 (2)"
