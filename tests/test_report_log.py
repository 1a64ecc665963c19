"""`edgesplit report` on long and damaged measurement logs: the log is read as columns (the
same summaries as row by row), long series are thinned without losing their spikes, and rows
with impossible numbers (NaN, infinite, negative) are left out and said so in one line."""

from __future__ import annotations

import csv
import math
import random
import statistics
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edgesplit.edge.measurements import (
    MEASUREMENT_FIELDS,
    MeasurementLog,
    read_columns,
    read_measurements,
)
from edgesplit.errors import InvalidArgument
from edgesplit.evaluation.plots import _envelope
from edgesplit.evaluation.report import summarise

from .helpers import measurement

START = datetime(2026, 1, 1, tzinfo=UTC)


def _log(directory: Path, rows: int, runs: int = 3, seed: int = 0) -> Path:
    """A log of ``rows`` varied inferences over ``runs`` runs, written by the edge's own writer."""
    rng = random.Random(seed)
    with MeasurementLog(directory, fsync=False) as log:
        for i in range(rows):
            on_edge = rng.random() < 0.2
            log.append(measurement(
                i + 1, run=f"r{i * runs // rows}", time=(START + timedelta(seconds=i)).isoformat(),
                latency_s=rng.uniform(0.01, 0.5), predicted_latency_s=rng.uniform(0.01, 0.5),
                cost_usd=rng.uniform(0, 1e-6), split_point=rng.choice([0, 3, 9]),
                codec=rng.choice(["raw", "int8"]), finished="edge" if on_edge else "cloud",
                fallback="offline: down" if on_edge else "", bandwidth_kbps=7200.0,
                rtt_ms=20.0, clock_ghz=1.5, weight=0.5))
    return directory


def _report(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgesplit.cli", "report", str(directory)],
                          capture_output=True, text=True, timeout=600)


def test_columns_give_the_summaries_computed_row_by_row(tmp_path: Path) -> None:
    _log(tmp_path, 40_000)  # more than two of the reader's chunks
    columns = read_columns(tmp_path)
    rows = read_measurements(tmp_path)
    assert len(columns) == len(rows) == 40_000 and columns.impossible == 0
    for summary in summarise(columns):
        group = [m for m in rows if f"run {m.run}" == summary.phase]
        offloads = [m for m in group if m.finished == "cloud"]
        assert summary.inferences == len(group) and summary.in_cloud == len(offloads)
        assert summary.median_latency_s == pytest.approx(statistics.median(
            m.latency_s for m in group))
        assert summary.prediction_error == pytest.approx(statistics.median(
            abs(m.predicted_latency_s - m.latency_s) / m.latency_s for m in offloads))
        assert summary.cost_usd == pytest.approx(sum(m.cost_usd for m in group))
        most = statistics.mode(m.split_point for m in group)
        assert summary.split_points.startswith(f"{most} (")
    assert [s.phase for s in summarise(columns)] == ["run r0", "run r1", "run r2"]
    some = read_columns(tmp_path, ("latency_s", "run"))  # as the report reads: what it needs
    assert list(some.data) == ["latency_s", "run"]
    assert (some["latency_s"] == columns["latency_s"]).all()
    with pytest.raises(InvalidArgument, match="a measurement log has no column 'nope'"):
        read_columns(tmp_path, ("latency_s", "nope"))


@pytest.mark.parametrize("bad", [("latency_s", "nan"), ("edge_s", "inf"),
                                 ("cloud_s", "-0.5"), ("latency_s", "-494.8"),
                                 ("cost_usd", "-inf")])
def test_impossible_numbers_are_left_out_and_said_in_one_line(tmp_path: Path,
                                                              bad: tuple[str, str]) -> None:
    column, value = bad
    _log(tmp_path, 300, runs=1)
    path = tmp_path / "measurements.csv"
    lines = path.read_text().splitlines(keepends=True)
    damaged = (7, 100, 250)  # line numbers (the header is line 1)
    for number in damaged:
        cells = next(csv.reader([lines[number - 1]]))
        cells[MEASUREMENT_FIELDS.index(column)] = value
        lines[number - 1] = ",".join(f'"{c}"' if "," in c or '"' in c else c
                                     for c in (c.replace('"', '""') for c in cells)) + "\n"
    path.write_text("".join(lines))
    done = _report(tmp_path)
    assert done.returncode == 0, done.stderr
    warning = f"edgesplit: warning: left out 3 rows of {path} with an impossible number (NaN, " \
        f"infinite or negative; first at line 7: {column}={value})"
    assert done.stderr.strip() == warning + ": the file was damaged or edited", done.stderr
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "**3 rows left out** for an impossible number (first at line 7" in summary
    assert "297 inferences" in summary
    row = next(line for line in summary.splitlines() if line.startswith("| run r0 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert 10 <= float(cells[6]) <= 500 and 10 <= float(cells[7]) <= 500  # median ms: finite
    assert 0 <= float(cells[9]) < 300  # the total cost, µ$
    kept = read_columns(tmp_path)
    assert len(kept) == 297 and kept.impossible == 3
    assert all(np.isfinite(kept[column])) and (kept[column] >= 0).all()


def test_a_log_of_only_impossible_rows_reports_none(tmp_path: Path) -> None:
    _log(tmp_path, 5, runs=1)
    path = tmp_path / "measurements.csv"
    lines = path.read_text().splitlines(keepends=True)
    index = MEASUREMENT_FIELDS.index("latency_s")
    rows = [next(csv.reader([line])) for line in lines[1:]]
    for row in rows:
        row[index] = "nan"
    with open(path, "w", newline="") as sink:
        sink.write(lines[0])
        csv.writer(sink, lineterminator="\n").writerows(rows)
    done = _report(tmp_path)
    assert done.returncode == 0 and "left out 5 rows" in done.stderr, done.stderr
    assert "0 inferences" in (tmp_path / "report" / "summary.md").read_text()


@pytest.mark.fast
def test_a_long_series_is_thinned_to_its_envelope_keeping_spikes() -> None:
    t = np.arange(200_000, dtype=float)
    y = np.sin(t / 5000) + 2
    y[123_457], y[150_001] = 50.0, -3.0  # one spike up, one down
    thin_t, thin_y = _envelope(t, y, limit=4000)
    assert len(thin_t) <= 4000 and (np.diff(thin_t) > 0).all()
    assert 123_457 in thin_t and 150_001 in thin_t
    assert thin_y.max() == 50.0 and thin_y.min() == -3.0
    short = np.arange(10.0)
    assert all(a is short for a in _envelope(short, short))  # short series as they are
    assert math.isclose(float(thin_y[thin_t == 0][0]), 2.0)
