"""The edge runtime against a real cloud process: offload, re-plan, fall back, log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from edgesplit.core import zoo
from edgesplit.core.planning import Objective
from edgesplit.core.profiles import Profile
from edgesplit.core.rescheduling import ReschedulePolicy
from edgesplit.core.splitting import SplitModel
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.edge.measurements import read_measurements, read_rows
from edgesplit.edge.runtime import Timing
from edgesplit.edge.sensors import FixedClock, Timebase
from edgesplit.evaluation.report import outcome
from edgesplit.measuring.store import read_profile
from edgesplit.testbed.link import LinkEmulator
from edgesplit.testbed.processes import CloudProcess

from .helpers import ManualClock, SetLink

SplitFactory = Callable[[str], SplitModel]


class SetClock(FixedClock):
    pass


def test_offloads_match_local_inference_and_every_row_is_logged(
        cloud: CloudProcess, mnist_profile_file: Path, tmp_path: Path,
        split_model: SplitFactory) -> None:
    split = split_model("mnist_cnn")
    inputs = list(torch.split(zoo.calibration_inputs("mnist_cnn"), 1))[:6]
    options = EdgeOptions("mnist_cnn", cloud.url, log_dir=tmp_path, codecs=("raw", "raw+zstd"))
    with build_runtime(options, split=split, profile=read_profile(mnist_profile_file)) as edge:
        results = edge.run(inputs, count=6)
    for x, result in zip(inputs, results, strict=True):
        assert torch.allclose(result.output, split(x), atol=1e-6)
        m = result.measurement
        assert m.finished == "cloud" and m.fallback == ""
        assert m.latency_s >= m.edge_s + m.cloud_s
        assert m.comm_s == pytest.approx(m.latency_s - m.edge_s - m.cloud_s, abs=1e-9)
        assert m.predicted_latency_s == pytest.approx(
            m.predicted_edge_s + m.predicted_comm_s + m.predicted_cloud_s)
    rows = read_measurements(tmp_path)
    assert [m.seq for m in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0].replan == "first" and rows[0].model == "mnist_cnn"
    layers = list(read_rows(tmp_path / "layers.csv"))
    first = [row for row in layers if row["seq"] == "1"]
    assert sorted(int(row["index"]) for row in first) == list(range(1, 10))
    sp = rows[0].split_point
    assert {row["side"] for row in first if int(row["index"]) <= sp} <= {"edge"}
    assert {row["side"] for row in first if int(row["index"]) > sp} <= {"cloud"}


def test_conditions_moving_past_a_threshold_trigger_a_new_split(
        cloud: CloudProcess, split_model: SplitFactory, alexnet_profile: Profile,
        tmp_path: Path) -> None:
    link = SetLink(bandwidth_kbps=1_000_000, rtt_ms=1)
    clock = SetClock(2.0)
    # Not load-aware: the shared cloud's reported wait moves with whatever else runs on it,
    # and this test is about the link and the clock.
    options = EdgeOptions("alexnet", cloud.url, objective=Objective("latency"),
                          reschedule=ReschedulePolicy(interval_s=3600), log_dir=tmp_path,
                          load_aware=False)
    edge = build_runtime(options, split=split_model("alexnet"), profile=alexnet_profile,
                         link=link, clock=clock)
    x = zoo.sample_input("alexnet")
    with edge:
        fast = edge.infer(x).measurement
        assert edge.infer(x).measurement.replan == ""  # nothing moved: no re-plan
        link.bandwidth_kbps = 50  # the uplink collapses
        slow = edge.infer(x).measurement
        object.__setattr__(clock, "ghz", 0.2)  # and the edge slows down
        slower = edge.infer(x).measurement
    assert fast.replan == "first" and slow.replan == "bandwidth" and slower.replan == "clock"
    # A fast link sends the raw input; a 50 kbit/s link makes the edge keep the work and send
    # only the 4 KB result.
    assert slow.offload_bytes < fast.offload_bytes
    assert slow.split_point == 19 and fast.split_point < 19
    assert slow.bandwidth_kbps == 50 and slower.clock_ghz == 0.2


def test_bandwidth_and_rtt_estimates_match_a_link_of_known_speed(
        cloud: CloudProcess, split_model: SplitFactory, alexnet_profile: Profile) -> None:
    # 4000 kbit/s and 60 ms between edge and cloud; the edge starts out believing 20x better.
    with LinkEmulator("127.0.0.1", cloud.port, rate_kbps=4000, rtt_ms=60,
                      burst_bytes=4096) as link:
        options = EdgeOptions("alexnet", f"http://127.0.0.1:{link.port}",
                              objective=Objective("latency"),
                              timing=Timing(ping_interval_s=0, probe_interval_s=0))
        edge = build_runtime(options, split=split_model("alexnet"), profile=alexnet_profile,
                             link=LinkEstimator(bandwidth_kbps=80_000, rtt_ms=3),
                             clock=FixedClock(2.0))
        with edge:
            edge.run([zoo.sample_input("alexnet")], count=8, interval_s=0.5)
    # The edge reports a link rate: payload rate times the TCP/IP framing factor (1.045).
    assert edge.link.bandwidth_kbps == pytest.approx(4000 * 1.045, rel=0.25)
    assert edge.link.rtt_ms == pytest.approx(60, rel=0.25)


def test_a_stopped_cloud_loses_no_inference_and_offloading_resumes(
        split_model: SplitFactory, mnist_profile_file: Path) -> None:
    split = split_model("mnist_cnn")
    x = zoo.sample_input("mnist_cnn")
    expected = split(x)
    server = CloudProcess(models="mnist_cnn").start()
    now = ManualClock()
    options = EdgeOptions("mnist_cnn", server.url, timing=Timing(retry_s=0.5),
                          objective=Objective("cost", edge="rent"))  # split 0: the cloud works
    edge = build_runtime(options, split=split, profile=read_profile(mnist_profile_file),
                         link=SetLink(bandwidth_kbps=1_000_000, rtt_ms=1),
                         timebase=Timebase(monotonic=now))
    try:
        before = [edge.infer(x).measurement for _ in range(3)]
        server.stop(signal.SIGKILL)
        during = [edge.infer(x) for _ in range(3)]
        server.start()
        now.advance(0.5)  # one retry interval
        after = edge.infer(x).measurement
    finally:
        edge.close()
        server.stop()
    assert [m.finished for m in before] == ["cloud"] * 3
    assert [r.measurement.finished for r in during] == ["edge"] * 3
    assert all(torch.allclose(r.output, expected, atol=1e-6) for r in during)
    assert "cannot reach the cloud" in during[0].measurement.fallback
    assert during[1].measurement.fallback.startswith("offline:")
    assert after.finished == "cloud"
    # Each is predicted as what ran: split 0 through the cloud, or the whole model on the edge.
    assert before[0].split_point == 0 and before[0].predicted_comm_s > 0
    for m in (r.measurement for r in during):
        assert (m.predicted_comm_s, m.predicted_cloud_s) == (0.0, 0.0)
        assert m.predicted_latency_s == m.predicted_edge_s > 0


def test_a_cloud_that_hangs_is_cut_off_at_the_deadline(split_model: SplitFactory,
                                                       mnist_profile_file: Path) -> None:
    split = split_model("mnist_cnn")
    x = zoo.sample_input("mnist_cnn")
    with CloudProcess(models="mnist_cnn") as server:
        options = EdgeOptions("mnist_cnn", server.url, timing=Timing(min_deadline_s=0.5),
                              objective=Objective("cost", edge="rent"))
        edge = build_runtime(options, split=split, profile=read_profile(mnist_profile_file),
                             link=SetLink(bandwidth_kbps=1_000_000, rtt_ms=1))
        assert server.process is not None
        try:
            edge.infer(x)
            os.kill(server.process.pid, signal.SIGSTOP)  # alive, accepting, never answering
            with ThreadPoolExecutor(1) as pool:  # a hang fails the test instead of stalling it
                result = pool.submit(edge.infer, x).result(timeout=120)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
            edge.close()
    assert result.measurement.finished == "edge"
    # The edge's own deadline ended the wait (its reason says so), not the 120 s bound above.
    assert "did not answer within 0.50 s" in result.measurement.fallback
    assert outcome(result.measurement) == "timed out"  # as the report's timeline marks it
    assert torch.allclose(result.output, split(x), atol=1e-6)


def test_the_log_survives_a_kill_of_the_edge(cloud: CloudProcess, mnist_profile_file: Path,
                                             tmp_path: Path) -> None:
    edge = subprocess.Popen(
        [sys.executable, "-m", "edgesplit.cli", "edge", "run", "--cloud", cloud.url,
         "--model", "mnist_cnn", "--sample", "--count", "100000", "--log", str(tmp_path),
         "--profile", str(mnist_profile_file), "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "measurements.csv"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") > 30:
            break
        time.sleep(0.05)
    edge.kill()  # SIGKILL: no chance to flush or close anything
    edge.wait()
    rows = read_measurements(tmp_path)
    assert len(rows) >= 30
    assert [m.seq for m in rows] == list(range(1, len(rows) + 1))
    assert all(m.finished == "cloud" and m.top1_class == 2 for m in rows)
    assert all(int(row["seq"]) <= len(rows) + 1 for row in read_rows(tmp_path / "layers.csv"))


def test_edge_run_cli_offloads_and_reports(cloud: CloudProcess, mnist_profile_file: Path,
                                           tmp_path: Path) -> None:
    digit = tmp_path / "digit.npy"
    np.save(digit, zoo.sample_input("mnist_cnn").numpy()[0])
    result = subprocess.run(
        [sys.executable, "-m", "edgesplit.cli", "edge", "run", "--cloud", cloud.url,
         "--model", "mnist_cnn", "--input", str(digit), "--count", "2",
         "--profile", str(mnist_profile_file)],
        capture_output=True, text=True, timeout=120, env=os.environ | {"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "2 inferences, 2 finished in the cloud" in result.stdout


def test_the_thesis_predictor_runs_the_edge_too(mnist_profile_file: Path) -> None:
    """Every predictor takes what the runtime learns (the thesis's keeps its fit)."""
    options = EdgeOptions("mnist_cnn", predictor="thesis")  # no cloud: all on the edge
    with build_runtime(options, profile=read_profile(mnist_profile_file),
                       clock=FixedClock(1.5)) as edge:
        fitted = edge.planner.predictor.predict(edge.conditions())
        rows = [edge.infer(zoo.sample_input("mnist_cnn")).measurement for _ in range(2)]
        assert edge.planner.predictor.predict(edge.conditions()) == fitted
    assert [(m.predictor, m.finished, m.top1_class) for m in rows] == [("thesis", "edge", 2)] * 2
    assert rows[0].predicted_latency_s == rows[0].predicted_edge_s
    assert (rows[0].predicted_comm_s, rows[0].predicted_cloud_s) == (0.0, 0.0)


def test_a_collapsed_uplink_is_told_from_a_dead_cloud_and_its_recovery_is_found(
        cloud: CloudProcess, split_model: SplitFactory, alexnet_profile: Profile) -> None:
    """The demo's last phase, shortened: the edge believes a 50 Mbit/s uplink that has fallen
    to 200 kbit/s, so its first offload times out. That is evidence (at most its bytes in the
    time waited): the edge re-plans to a split that fits instead of retrying the cloud as if it
    were flaky. When the uplink comes back a hundredfold, the small transfers of that split
    cannot show it: the stale estimate is probed, and found."""
    # No burst: a 4 KB burst would carry the 4 KB answers of split 19 at any speed.
    with LinkEmulator("127.0.0.1", cloud.port, rate_kbps=200, rtt_ms=100,
                      burst_bytes=0) as link:
        options = EdgeOptions("alexnet", f"http://127.0.0.1:{link.port}",
                              objective=Objective("latency"), load_aware=False,
                              timing=Timing(retry_s=0.5))
        edge = build_runtime(options, split=split_model("alexnet"), profile=alexnet_profile,
                             link=LinkEstimator(bandwidth_kbps=50_000, rtt_ms=10),
                             clock=FixedClock(2.0))
        x = zoo.sample_input("alexnet")
        with edge:
            # Split 13 sends 36 KB: 18 ms at the belief, 1.5 s on the link.
            first = edge.infer(x, split_point=13).measurement
            slow = [r.measurement for r in edge.run([x], count=5, interval_s=0.3)]
            link.set_rate_kbps(20_000)
            back = [r.measurement for r in edge.run([x], count=4, interval_s=0.1)]
    # Only the first offload times out; the edge learns the slow link from it and soon
    # offloads a split that fits, in time.
    assert first.finished == "edge" and "did not answer within 1.00 s" in first.fallback
    assert slow[0].bandwidth_kbps < 2000  # planned on the bound: 36 KB not through in 1 s
    assert all(m.finished == "cloud" and m.fallback == "" for m in slow)
    assert slow[-1].bandwidth_kbps < 2000 and slow[-1].offload_bytes < first.offload_bytes
    # Back up: within three inferences the edge believes a link many times faster.
    assert back[2].bandwidth_kbps > 5 * slow[-1].bandwidth_kbps
    assert edge.probing.probes > 0  # the timeout's readiness check, at least
