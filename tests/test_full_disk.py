"""The edge's measurement log on a real disk that fills up: the edge infers on, warns once per
stretch it cannot log (not once per inference), logs again once there is room, and never leaves
a torn row. The disk is a 256 KiB tmpfs (root)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgesplit.edge.measurements import (
    LAYER_FIELDS,
    MEASUREMENT_FIELDS,
    MeasurementLog,
    read_measurements,
)
from edgesplit.testbed.processes import CloudProcess

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root to mount a small tmpfs that can fill up")
PAGE = 4096


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(disk: Path, leave_pages: int = 0) -> Path:
    """Fill ``disk`` to the last byte, then free ``leave_pages`` pages; returns the filler."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    written = 0
    try:
        while True:
            written += os.write(fd, b"x" * PAGE)
    except OSError:
        pass
    os.ftruncate(fd, max(0, written - leave_pages * PAGE))
    os.close(fd)
    return filler


def _whole(path: Path, fields: list[str]) -> list[list[str]]:
    """Every line of a log file, each checked whole: the header, then rows of all fields."""
    text = path.read_text()
    assert text.endswith("\n"), f"{path.name} ends in a torn row"
    lines = list(csv.reader(text.splitlines()))
    assert lines[0] == fields
    assert all(len(row) == len(fields) for row in lines[1:]), f"a torn row in {path.name}"
    return lines[1:]


def _edge_run(cloud: CloudProcess, profile: Path, log: Path, count: int,
              free_after: int | None, filler: Path) -> tuple[list[dict[str, object]], str, int]:
    """``edge run`` for ``count`` inferences; the filler is deleted once ``free_after`` have
    been printed (None: never)."""
    command = [sys.executable, "-m", "edgesplit.cli", "edge", "run", "--cloud", cloud.url,
               "--model", "mnist_cnn", "--sample", "--count", str(count), "--interval", "0.01",
               "--split-point", "3", "--profile", str(profile), "--log", str(log), "--json"]
    edge = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert edge.stdout is not None and edge.stderr is not None
    results = []
    for line in edge.stdout:
        results.append(json.loads(line))
        if len(results) == free_after:
            filler.unlink()
    said = edge.stderr.read()
    return results, said, edge.wait(timeout=60)


def _gaps(logged: list[int], count: int) -> list[tuple[int, int]]:
    """The runs of inferences 1..``count`` missing from ``logged``, as (first, last)."""
    assert logged == sorted(set(logged)), logged
    gaps: list[tuple[int, int]] = []
    for seq in sorted(set(range(1, count + 1)) - set(logged)):
        if gaps and gaps[-1][1] == seq - 1:
            gaps[-1] = (gaps[-1][0], seq)
        else:
            gaps.append((seq, seq))
    return gaps


@pytest.mark.parametrize("room_pages", [0, 3])
def test_the_edge_infers_on_through_a_full_disk_and_logs_again_after(
        disk: Path, cloud: CloudProcess, mnist_profile_file: Path, room_pages: int) -> None:
    log = disk / "log"
    with MeasurementLog(log):  # the headers, as an earlier run left them
        pass
    filler = _fill(disk, leave_pages=room_pages)  # 0: full from the start; 3: fills mid-run
    results, said, code = _edge_run(cloud, mnist_profile_file, log, 100, 50, filler)
    assert code == 0, said
    assert [r["seq"] for r in results] == list(range(1, 101))  # no inference lost
    assert all(r["finished"] == "cloud" for r in results)
    rows = _whole(log / "measurements.csv", MEASUREMENT_FIELDS)
    logged = [int(row[0]) for row in rows]
    gaps = _gaps(logged, 100)
    # What fitted (the pages' slack, and the room left), then gaps while full, and every one
    # from the first inference after the room came back. A disk at the brink may take a
    # smaller row between refusals, so there may be more than one gap: each is said once
    # when it begins and once when it ends, never once per inference.
    assert gaps and gaps[0][0] > 1 and gaps[-1][1] <= 50, gaps
    refusals = [line for line in said.splitlines() if "cannot write the measurement log" in line]
    assert [f"from inference {first}:" in line for (first, _), line
            in zip(gaps, refusals, strict=True)] == [True] * len(gaps), said
    assert all("No space left on device" in line and "inferring on without logging" in line
               for line in refusals)
    for first, last in gaps:
        assert f"logging to {log} again from inference {last + 1} ({last - first + 1} not " \
            "logged)" in said, said
    # Layer times only of logged inferences, and all of theirs (edge and cloud sides).
    layers = _whole(log / "layers.csv", LAYER_FIELDS)
    assert {int(row[0]) for row in layers} == set(logged)
    assert [m.seq for m in read_measurements(log)] == logged


def test_a_log_that_cannot_start_is_refused_in_one_line_and_leaves_no_torn_header(
        disk: Path, cloud: CloudProcess, mnist_profile_file: Path) -> None:
    log = disk / "log"
    log.mkdir()
    filler = _fill(disk)
    results, said, code = _edge_run(cloud, mnist_profile_file, log, 3, None, filler)
    assert code == 2 and not results
    assert said.count("\n") == 1 and "No space left on device" in said, said
    assert "cannot write the measurement log" in said
    for name in ("measurements.csv", "layers.csv"):
        assert not (log / name).exists() or (log / name).stat().st_size == 0
    filler.unlink()  # with room again, the same folder takes a log
    results, said, code = _edge_run(cloud, mnist_profile_file, log, 3, None, filler)
    assert code == 0 and len(_whole(log / "measurements.csv", MEASUREMENT_FIELDS)) == 3
