"""The edge's pure parts and file handling: rescheduler, link estimator, log, inputs."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from edgesplit.core import zoo
from edgesplit.core.planning import Objective, SplitPlan, plan_prediction
from edgesplit.core.predictors import Conditions, Prediction
from edgesplit.core.rescheduling import (
    ReschedulePolicy,
    Rescheduler,
    noise_hysteresis,
    with_hysteresis,
)
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.inputs import input_files, load_input
from edgesplit.edge.measurements import (
    LayerTime,
    Measurement,
    MeasurementLog,
    check_log,
    read_measurements,
    read_rows,
)
from edgesplit.edge.runtime import Timing
from edgesplit.edge.sensors import FileClock
from edgesplit.errors import InputError, InvalidArgument

from .helpers import measurement

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)

BASE = Conditions(bandwidth_kbps=1000, rtt_ms=40, clock_ghz=1.5)


def test_rescheduler_replans_on_timer_and_on_each_threshold() -> None:
    r = Rescheduler(ReschedulePolicy(interval_s=10, bandwidth_change=0.2, rtt_change_ms=20,
                                     clock_change=0.1))
    assert r.due(0.0, BASE) == "first"
    r.planned(0.0, BASE)
    assert r.due(5.0, BASE) is None
    assert r.due(10.0, BASE) == "timer"
    assert r.due(5.0, Conditions(1150, 40, 1.5)) is None  # +15%: noise
    assert r.due(5.0, Conditions(700, 40, 1.5)) == "bandwidth"
    assert r.due(5.0, Conditions(1000, 65, 1.5)) == "rtt"
    assert r.due(5.0, Conditions(1000, 40, 1.2)) == "clock"
    r.planned(5.0, Conditions(700, 40, 1.5))
    assert r.due(6.0, Conditions(700, 40, 1.5)) is None


def near_tie_plan(strategy: str = "latency", **objective: Any) -> SplitPlan:
    """Split 1 is 2% faster and 2% cheaper than split 0; split 2 is slow but cheap."""
    prediction = Prediction(edge_s=(0.0, 0.0, 1.5), comm_s=(0.0, 0.0, 0.0),
                            cloud_s=(1.0, 0.98, 0.5), offload_bytes=(10, 10, 10),
                            codec=("raw",) * 3)
    return plan_prediction("toy", ("input", "a", "b"), prediction, BASE,
                           Objective(strategy, **objective))


def test_hysteresis_keeps_the_current_split_when_the_gain_is_small() -> None:
    plan = near_tie_plan()
    assert plan.split_point == 1
    kept = with_hysteresis(plan, current=0, hysteresis=0.05)
    assert kept.split_point == 0 and kept.candidates == plan.candidates
    assert with_hysteresis(plan, current=0, hysteresis=0.01) is plan  # 2% beats 1%
    assert with_hysteresis(plan, current=2, hysteresis=0.05) is plan  # 51% faster
    assert with_hysteresis(plan, current=1, hysteresis=0.05) is plan
    assert with_hysteresis(plan, current=None, hysteresis=0.05) is plan


def test_hysteresis_never_keeps_a_split_that_misses_the_deadline() -> None:
    plan = near_tie_plan("slo", deadline_ms=990)
    assert plan.split_point == 1 and plan.constraint_met
    assert with_hysteresis(plan, current=0, hysteresis=0.99).split_point == 1


def test_link_estimator_separates_bandwidth_and_rtt_from_mixed_sizes() -> None:
    link = LinkEstimator(bandwidth_kbps=1000, rtt_ms=10, wire_factor=1.0)
    for size in (100_000, 0, 50_000, 20_000):  # 2000 kbit/s, 50 ms
        link.observe_transfer(size, 0.05 + size * 8 / 2_000_000)
    assert link.bandwidth_kbps == pytest.approx(2000)
    assert link.rtt_ms == pytest.approx(50)
    assert link.samples == 4


def test_link_estimator_converges_on_a_link_it_misjudged() -> None:
    link = LinkEstimator(bandwidth_kbps=10_000, rtt_ms=20, wire_factor=1.0)
    for size in [27_000, 500, 27_000, 300, 40_000, 27_000, 800] * 3:
        link.observe_transfer(size, 0.1 + size * 8 / 400_000)
    assert link.bandwidth_kbps == pytest.approx(400, rel=0.01)
    assert link.rtt_ms == pytest.approx(100, rel=0.01)


def test_link_estimator_with_same_sized_offloads_leans_on_pings() -> None:
    link = LinkEstimator(bandwidth_kbps=10_000, rtt_ms=20, wire_factor=1.0)
    for _ in range(20):
        link.observe_rtt(0.1)  # pings: 100 ms
    for _ in range(20):
        link.observe_transfer(27_000, 0.1 + 27_000 * 8 / 400_000)
    assert link.rtt_ms == pytest.approx(100, rel=0.05)
    assert link.bandwidth_kbps == pytest.approx(400, rel=0.05)


def test_link_estimator_follows_a_change() -> None:
    link = LinkEstimator(bandwidth_kbps=5000, rtt_ms=40, wire_factor=1.0)
    sizes = [60_000, 4_000, 30_000, 0]
    for size in sizes * 4:
        link.observe_transfer(size, 0.04 + size * 8 / 5_000_000)
    for size in sizes * 4:  # the uplink drops to 500 kbit/s, the RTT doubles
        link.observe_transfer(size, 0.08 + size * 8 / 500_000)
    assert link.bandwidth_kbps == pytest.approx(500, rel=0.15)
    assert link.rtt_ms == pytest.approx(80, rel=0.15)


def fast_then(link: LinkEstimator, kbps: float, rtt_s: float, sizes: list[int]) -> list[float]:
    """Ping, then feed ``sizes`` over a link of ``kbps`` and ``rtt_s``; the estimate after
    each."""
    link.observe_rtt(rtt_s)
    after = []
    for size in sizes:
        link.observe_transfer(size, rtt_s + size * 8 / (kbps * 1000))
        after.append(link.bandwidth_kbps)
    return after


@pytest.mark.parametrize(("before", "after"), [(40_000, 4000), (4000, 40_000), (4000, 400)],
                         ids=["10x down", "10x up", "10x down, slow"])
def test_link_estimator_takes_a_tenfold_step_at_once(before: float, after: float) -> None:
    """Transfers ten times off the estimate are a change, not noise: the second in a row (or a
    probe sent because the estimate is in doubt) starts the estimate afresh instead of
    averaging into 16 points of the old link."""
    link = LinkEstimator(bandwidth_kbps=before, rtt_ms=20, wire_factor=1.0)
    link.observe_rtt(0.02)
    fast_then(link, before, 0.02, [150_000, 60_000] * 8)
    assert link.bandwidth_kbps == pytest.approx(before, rel=0.01)
    first, second = fast_then(link, after, 0.02, [150_000, 60_000])
    assert first == pytest.approx(before, rel=0.5)  # one outlier: perhaps a hiccup
    assert second == pytest.approx(after, rel=0.01) and link.changes == 1
    fast_then(link, before, 0.02, [150_000])  # back again, told by a probe
    link.observe_probe(60_000, 0.02 + 60_000 * 8 / (before * 1000))
    assert link.bandwidth_kbps == pytest.approx(before, rel=0.01) and link.changes == 2


@pytest.mark.parametrize("pinged", [False, True], ids=["no pings", "pinged"])
def test_a_step_at_one_payload_size_is_taken_at_once_and_only_once(pinged: bool) -> None:
    """An edge at one split point sends one size: the change's two alike points are the new
    link (without pings to pin the round trip too), and after it one hiccup is no change."""
    link = LinkEstimator(bandwidth_kbps=8000, rtt_ms=20, wire_factor=1.0)
    if pinged:
        link.observe_rtt(0.02)
    for _ in range(5):
        link.observe_transfer(100_000, 0.02 + 100_000 * 8 / 8e6)
    for _ in range(2):  # the link drops to 800 kbit/s: two outliers in a row
        link.observe_transfer(100_000, 0.02 + 100_000 * 8 / 8e5)
    assert link.bandwidth_kbps == pytest.approx(800, rel=0.01) and link.changes == 1
    link.observe_transfer(100_000, 0.02 + 100_000 * 8 / 8e4)  # a lone hiccup right after it
    assert link.changes == 1 and link.bandwidth_kbps == pytest.approx(800, rel=0.01)
    link.observe_transfer(100_000, 0.02 + 100_000 * 8 / 8e5)
    assert link.changes == 1


def test_a_lone_hiccup_is_no_change() -> None:
    link = LinkEstimator(bandwidth_kbps=4000, rtt_ms=20, wire_factor=1.0)
    link.observe_rtt(0.02)
    fast_then(link, 4000, 0.02, [150_000] * 8)
    fast_then(link, 400, 0.02, [150_000])  # one transfer ten times slower
    fast_then(link, 4000, 0.02, [150_000] * 2)
    # Averaged in as data, not taken as the link's new speed (400 kbit/s).
    assert link.changes == 0 and 1000 < link.bandwidth_kbps < 4000


def test_link_estimator_averages_noise_and_learns_how_noisy_the_link_is() -> None:
    link = LinkEstimator(bandwidth_kbps=4000, rtt_ms=20, wire_factor=1.0)
    link.observe_rtt(0.02)
    rng = np.random.default_rng(1)
    for _ in range(40):  # each transfer up to 40% off: noise, never a change
        size = 100_000
        link.observe_transfer(size, (0.02 + size * 8 / 4e6) * rng.uniform(0.7, 1.4))
    assert link.changes == 0
    assert link.bandwidth_kbps == pytest.approx(4000, rel=0.25)
    assert 0.05 < link.noise < 0.3


def test_a_timeout_bounds_the_bandwidth_only_when_the_estimate_said_it_would_arrive() -> None:
    link = LinkEstimator(bandwidth_kbps=63_000, rtt_ms=18, wire_factor=1.0)
    link.observe_rtt(0.018)
    fast_then(link, 63_000, 0.018, [602_112, 9216] * 4)
    # 602 KB not through in 1 s: the link carries at most 4.8 Mbit/s, not 63.
    assert link.observe_timeout(602_112, 1.0)
    assert link.bandwidth_kbps == pytest.approx(602_112 * 8 / (1.0 - 0.018) / 1000)
    # The same timeout again says nothing new: the estimate already expects it to take 1 s.
    assert not link.observe_timeout(602_112, 1.0)
    assert not link.observe_timeout(0, 1.0)


def test_only_a_transfer_that_could_tell_a_ten_times_faster_link_is_informative() -> None:
    link = LinkEstimator(bandwidth_kbps=400, rtt_ms=100, wire_factor=1.0)
    # At 400 kbit/s, 4 KB take 80 ms: at ten times the speed, 8 ms, lost in a 100 ms RTT.
    assert not link.informative(4000)
    assert link.informative(25_000)  # 500 ms; 50 ms at ten times the speed: half the RTT
    assert link.bytes_for(0.5) == 25_000


@pytest.mark.parametrize("bad", [{"stale_after": 0}, {"stale_after": 3, "max_stale_after": 2},
                                 {"noise_hysteresis": -1.0}, {"max_hysteresis": -0.1}],
                         ids=["no inferences", "backing off below", "negative", "negative cap"])
def test_probing_and_hysteresis_settings_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        if "stale_after" in bad:
            Timing(**bad)  # type: ignore[arg-type]
        else:
            ReschedulePolicy(**bad)  # type: ignore[arg-type]


def test_hysteresis_grows_with_the_measured_noise_up_to_a_cap() -> None:
    policy = ReschedulePolicy(hysteresis=0.05, noise_hysteresis=2.0, max_hysteresis=0.5)
    assert noise_hysteresis(policy, 0.0) == 0.05  # a quiet link: the policy's own
    assert noise_hysteresis(policy, 0.1) == pytest.approx(0.2)
    assert noise_hysteresis(policy, 2.0) == 0.5
    assert noise_hysteresis(ReschedulePolicy(hysteresis=0.7), 2.0) == 0.7  # never below it


def test_file_clock_reads_the_emulated_clock_and_keeps_the_last_good_value(
        tmp_path: Path) -> None:
    path = tmp_path / "clock"
    clock = FileClock(path, default_ghz=2.0)
    assert clock.read_ghz() == 2.0
    path.write_text("0.9\n")
    assert clock.read_ghz() == 0.9
    path.write_text("")  # caught mid-write
    assert clock.read_ghz() == 0.9


def test_measurement_log_appends_and_reads_back(tmp_path: Path) -> None:
    with MeasurementLog(tmp_path) as log:
        log.append(measurement(1), [LayerTime(1, "r1", "edge", 1, "conv", 0.01)])
        log.append(measurement(2))
    with MeasurementLog(tmp_path) as log:  # reopening appends, no second header
        log.append(measurement(3))
    rows = read_measurements(tmp_path)
    assert [m.seq for m in rows] == [1, 2, 3]
    assert rows[0] == measurement(1)
    assert list(read_rows(tmp_path / "layers.csv")) == [
        {"seq": "1", "run": "r1", "side": "edge", "index": "1", "layer": "conv",
         "time_s": "0.01"}]


def test_a_log_with_other_columns_is_refused_not_corrupted(tmp_path: Path) -> None:
    (tmp_path / "measurements.csv").write_text("seq,time,latency\n1,x,0.1\n")
    with pytest.raises(InvalidArgument, match="holds other columns"):
        MeasurementLog(tmp_path)
    assert (tmp_path / "measurements.csv").read_text() == "seq,time,latency\n1,x,0.1\n"
    with pytest.raises(InvalidArgument, match="cannot write the measurement log"):
        MeasurementLog(tmp_path / "measurements.csv" / "below-a-file")


def test_a_log_of_the_version_that_named_the_answer_prediction_is_still_read(
        tmp_path: Path) -> None:
    with MeasurementLog(tmp_path) as log:
        log.append(measurement(1))
    path = tmp_path / "measurements.csv"
    header, rows = path.read_text().split("\n", 1)
    path.write_text(header.replace("top1_class", "prediction") + "\n" + rows)
    check_log(tmp_path)
    assert read_measurements(tmp_path) == [measurement(1)]


def test_a_torn_last_row_is_skipped_and_healed(tmp_path: Path) -> None:
    with MeasurementLog(tmp_path) as log:
        log.append(measurement(1))
    with open(tmp_path / "measurements.csv", "a") as handle:
        handle.write("2,2026-01-01,0.5,m,ra")  # a crash in the middle of a row
    assert [m.seq for m in read_measurements(tmp_path)] == [1]
    with MeasurementLog(tmp_path) as log:
        log.append(measurement(3))
    assert [m.seq for m in read_measurements(tmp_path)] == [1, 3]
    with open(tmp_path / "measurements.csv", newline="") as handle:
        assert all(len(row) in (len(Measurement.__dataclass_fields__), 5)
                   for row in csv.reader(handle))


def test_images_are_resized_and_normalised(tmp_path: Path) -> None:
    spec = zoo.get_spec("alexnet")
    Image.new("RGB", (640, 480), (255, 0, 0)).save(tmp_path / "red.png")
    x = load_input(tmp_path / "red.png", spec)
    assert x.shape == (1, 3, 224, 224)
    assert x[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    grey = zoo.get_spec("mnist_cnn")
    Image.new("L", (50, 50), 0).save(tmp_path / "digit.jpg")
    assert load_input(tmp_path / "digit.jpg", grey).shape == (1, 1, 28, 28)


def test_npy_inputs_are_checked(tmp_path: Path) -> None:
    spec = zoo.get_spec("mnist_cnn")
    np.save(tmp_path / "ok.npy", np.zeros((1, 28, 28), dtype=np.float32))
    assert torch.equal(load_input(tmp_path / "ok.npy", spec), torch.zeros(1, 1, 28, 28))
    np.save(tmp_path / "wrong.npy", np.zeros((3, 28, 28), dtype=np.float32))
    with pytest.raises(InputError, match=r"takes a numeric array of shape \[1, 1, 28, 28\]"):
        load_input(tmp_path / "wrong.npy", spec)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"not a readable \.npy"):  # never unpickled
        load_input(tmp_path / "objects.npy", spec)


def test_unreadable_inputs_are_one_clear_error(tmp_path: Path) -> None:
    spec = zoo.get_spec("alexnet")
    (tmp_path / "fake.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"fake\.png is not a readable image"):
        load_input(tmp_path / "fake.png", spec)
    with pytest.raises(InputError, match="does not exist"):
        input_files(tmp_path / "missing.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        input_files(tmp_path / "empty")
    assert input_files(tmp_path) == [tmp_path / "fake.png"]
