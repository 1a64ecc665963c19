from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from edgesplit.core.fitting import denormalise, fit_power_law, min_max_normalise
from edgesplit.core.predictors import (
    Conditions,
    NeurosurgeonPredictor,
    ProfilePredictor,
    ThesisPredictor,
    make_predictor,
    thesis_comm_s,
)
from edgesplit.core.profiles import LayerProfile, Profile
from edgesplit.errors import CalibrationError, InvalidArgument, InvalidConditions, NotFitted

from .helpers import make_profile

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)


def test_thesis_communication_formula_on_hand_computed_numbers() -> None:
    # AlexNet after the average pool: 36,864 bytes at 7.2 Mbit/s with a 40 ms ping:
    # 36864 * 8 / 7,200,000 = 0.04096 s, plus 40 / 2000 = 0.02 s.
    assert thesis_comm_s(36_864, 7200, 40) == pytest.approx(0.06096)
    assert thesis_comm_s(0, 1000, 0) == 0


def test_power_law_fit_recovers_exact_parameters() -> None:
    law = fit_power_law([0.6, 0.9, 1.2, 1.5], [3 * c**-1.3 for c in (0.6, 0.9, 1.2, 1.5)])
    assert law.a == pytest.approx(3, rel=1e-6)
    assert law.b == pytest.approx(-1.3, rel=1e-6)
    assert law.ratio(1.0, 2.0) == pytest.approx(2**1.3)


def test_power_law_fit_refuses_too_few_clocks() -> None:
    with pytest.raises(CalibrationError, match="two or more distinct clock speeds"):
        fit_power_law([1.0, 1.0], [2.0, 2.1])


def test_normalisation_round_trips() -> None:
    values = [0.1, 0.06, 0.04]
    normalised = min_max_normalise(values)
    assert normalised == pytest.approx([1.0, 1 / 3, 0.0])
    assert [denormalise(v, 0.04, 0.1) for v in normalised] == pytest.approx(values)
    with pytest.raises(CalibrationError):
        min_max_normalise([1.0, 1.0])


def thesis_network(model: str, n: int, latencies: dict[float, float],
                   forward_s: float = 0.5) -> Profile:
    return make_profile(model, times=[forward_s / n] * n, sizes=[1000 * (n + 1 - sp)
                                                                  for sp in range(n + 1)],
                        calibration=sorted(latencies.items()), forward_s=forward_s)


def test_thesis_predictor_follows_equations_4_1_to_4_3() -> None:
    # Network A, 10 layers: all-in-edge 1.0 s at 0.6 GHz, 0.6 s at 1.0 GHz, 0.4 s at 1.5 GHz,
    # so slopes 0.1, 0.06, 0.04 s/layer, normalised 1, 1/3, 0.
    a = thesis_network("a", 10, {0.6: 1.0, 1.0: 0.6, 1.5: 0.4})
    b = thesis_network("b", 4, {0.6: 2.0, 1.0: 1.3, 1.5: 1.0})
    predictor = ThesisPredictor().fit(a, peers=[b])
    assert predictor.slope_high_ == pytest.approx(0.1)
    assert predictor.slope_low_ == pytest.approx(0.04)
    assert len(predictor.points_) == 6  # both networks' normalised slopes share one law
    p = predictor.predict(Conditions(bandwidth_kbps=8, rtt_ms=100, clock_ghz=1.2))
    slope = denormalise(predictor.law_(1.2), 0.04, 0.1)  # equation 4.2
    assert p.edge_s == pytest.approx([slope * sp for sp in range(11)])  # equation 4.1
    # The cloud: one all-in-cloud time (0.5 s) scaled by the layers left.
    assert p.cloud_s == pytest.approx([0.5 * (10 - sp) / 10 for sp in range(11)])
    # Communication: 11,000 bytes at 8 kbit/s is 11 s, plus half the 100 ms ping.
    assert p.comm_s[0] == pytest.approx(11.05)
    assert p.latency_s[3] == pytest.approx(p.edge_s[3] + p.comm_s[3] + p.cloud_s[3])
    # The law is decreasing: a slower clock means a steeper edge line.
    assert predictor.edge_slope_s(0.6) > predictor.edge_slope_s(1.0) > predictor.edge_slope_s(1.5)


def test_thesis_predictor_needs_two_calibrated_clocks() -> None:
    with pytest.raises(CalibrationError, match="--clocks"):
        ThesisPredictor().fit(thesis_network("a", 10, {1.5: 0.4}))


def test_profile_predictor_on_hand_computed_numbers() -> None:
    # Layers take 0.1, 0.2, 0.3 s at 2 GHz; no calibration: time scales as 1/clock.
    profile = make_profile(times=(0.1, 0.2, 0.3), sizes=(4000, 3000, 2000, 1000), clock_ghz=2.0)
    cloud = make_profile(times=(0.01, 0.02, 0.03))
    predictor = ProfilePredictor(wire_factor=1.0, request_overhead_bytes=0).fit(profile, cloud)
    p = predictor.predict(Conditions(bandwidth_kbps=8, rtt_ms=100, clock_ghz=1.0))
    assert p.edge_s == pytest.approx([0.0, 0.2, 0.6, 1.2])  # cumulative, twice as slow
    assert p.cloud_s == pytest.approx([0.06, 0.05, 0.03, 0.0])  # what is left, in the cloud
    # 4,000 bytes at 8 kbit/s is 4 s, plus one whole round trip.
    assert p.comm_s == pytest.approx([4.1, 3.1, 2.1, 1.1])
    assert p.offload_bytes == (4000, 3000, 2000, 1000)


def test_profile_predictor_counts_wire_overhead_and_codec_size() -> None:
    profile = make_profile(sizes=(4000, 3000, 2000, 1000))
    predictor = ProfilePredictor(wire_factor=1.05, request_overhead_bytes=500).fit(profile)
    conditions = Conditions(bandwidth_kbps=8, rtt_ms=0, clock_ghz=2.0)
    assert predictor.predict(conditions).comm_s[0] == pytest.approx((4000 + 500) * 1.05 / 1000)
    # Before anything is sent, int8 is a quarter of float32 and zstd two thirds of that.
    int8 = predictor.predict(conditions, "int8+zstd")
    assert int8.offload_bytes[0] == round(4000 * 0.25 * 0.65)
    assert int8.codec == ("int8+zstd",) * 4
    assert int8.comm_s[0] == pytest.approx((int8.offload_bytes[0] + 500) * 1.05 / 1000)


def test_profile_predictor_learns_codec_sizes_and_times() -> None:
    profile = make_profile(sizes=(4000, 3000, 2000, 1000))
    predictor = ProfilePredictor(learning_rate=1.0).fit(profile)
    predictor.partial_fit(clock_ghz=2.0, codec="raw+zstd", split_point=1, encoded_bytes=600,
                          codec_s=0.004)
    p = predictor.predict(Conditions(bandwidth_kbps=8, rtt_ms=0, clock_ghz=2.0), "raw+zstd")
    assert p.offload_bytes[1] == 600  # learned where it was sent
    assert p.offload_bytes[2] == round(2000 * 0.65)  # still the prior elsewhere
    assert p.edge_s[1] == pytest.approx(0.1 + 0.004)  # encoding is edge time
    # ... and scales with the clock as the layers do: at 1 GHz the edge is twice as slow.
    slow = predictor.predict(Conditions(bandwidth_kbps=8, rtt_ms=0, clock_ghz=1.0), "raw+zstd")
    assert slow.edge_s[1] == pytest.approx(2 * (0.1 + 0.004))
    predictor.partial_fit(clock_ghz=1.0, codec="raw+zstd", split_point=1, codec_s=0.008)
    assert predictor.codec_s_["raw+zstd"][1] == pytest.approx(0.004)  # the same at 2 GHz


def test_profile_predictor_learns_layer_times_online() -> None:
    profile = make_profile(times=(0.1, 0.2, 0.3), clock_ghz=2.0)
    predictor = ProfilePredictor(learning_rate=0.5).fit(profile)
    # At 1 GHz the edge is twice as slow; layer 1 took 0.4 s there, i.e. 0.2 s at 2 GHz.
    predictor.partial_fit(clock_ghz=1.0, edge_layer_s={1: 0.4}, cloud_layer_s={3: 0.1})
    assert predictor.edge_layer_s_ == pytest.approx([0.15, 0.2, 0.3])
    assert predictor.cloud_layer_s_ == pytest.approx([0.1, 0.2, 0.2])
    p = predictor.predict(Conditions(bandwidth_kbps=1000, rtt_ms=0, clock_ghz=2.0))
    assert p.edge_s == pytest.approx([0.0, 0.15, 0.35, 0.65])
    assert p.cloud_s == pytest.approx([0.5, 0.4, 0.2, 0.0])


def test_profile_predictor_learns_what_its_model_misses_from_whole_latencies() -> None:
    profile = make_profile(times=(0.1, 0.2, 0.3), sizes=(4000, 3000, 2000, 1000), clock_ghz=2.0)
    predictor = ProfilePredictor(wire_factor=1.0, request_overhead_bytes=0).fit(profile)
    conditions = Conditions(bandwidth_kbps=8, rtt_ms=100, clock_ghz=1.0)
    before = predictor.predict(conditions).latency_s
    # Split point 0 measured 5, 7 and 6 ms above the model, and once a 0.9 s spike: the
    # median is its correction. Split point 3 measured 0.2 s below: a negative correction.
    for split_point, excess in ((0, 0.005), (0, 0.007), (0, 0.9), (0, 0.006), (3, -0.2)):
        predictor.observe(conditions, split_point, before[split_point] + excess)
    assert predictor.correction_s_[0] == pytest.approx(0.0065)
    assert predictor.correction_s_[3] == pytest.approx(-0.2)
    # Split points never measured take the median over every excess seen (6 ms).
    assert predictor.correction_s_[1:3] == pytest.approx([0.006, 0.006])
    after = predictor.predict(conditions)
    assert after.latency_s == pytest.approx([before[0] + 0.0065, before[1] + 0.006,
                                             before[2] + 0.006, before[3] - 0.2])
    assert after.comm_s[1] == pytest.approx(3.1 + 0.006)  # the correction goes to comm_s
    # At a fast link the negative correction would make comm_s negative: it stops at 0.
    assert predictor.predict(Conditions(8000, 0, 1.0)).comm_s[3] == 0.0
    assert predictor.fit(profile).correction_s_ == (0.0,) * 4  # fitting starts afresh
    thesis = ThesisPredictor().fit(thesis_network("a", 10, {0.6: 1.0, 1.0: 0.6, 1.5: 0.4}))
    assert thesis.observe(conditions, 0, 9.0) is thesis  # the thesis's model learns nothing


def test_thesis_predictor_models_raw_tensors_only() -> None:
    predictor = ThesisPredictor().fit(thesis_network("a", 10, {0.6: 1.0, 1.0: 0.6, 1.5: 0.4}))
    with pytest.raises(InvalidArgument, match="raw float32 tensors only"):
        predictor.predict(Conditions(1000, 10, 1.0), "float16")


def test_profile_predictor_uses_the_calibrated_clock_law() -> None:
    # Calibration says time goes as clock^-0.5 (a memory-bound model), anchored at 2 GHz.
    calibration = [(c, 0.6 * (c / 2.0) ** -0.5) for c in (0.5, 1.0, 1.5)]
    profile = make_profile(times=(0.1, 0.2, 0.3), clock_ghz=2.0, calibration=calibration,
                           forward_s=0.6)
    predictor = ProfilePredictor().fit(profile)
    assert predictor.law_.b == pytest.approx(-0.5, rel=1e-4)
    p = predictor.predict(Conditions(bandwidth_kbps=1000, rtt_ms=0, clock_ghz=0.5))
    assert p.edge_s[3] == pytest.approx(0.6 * 2.0, rel=1e-4)


def typed(profile: Profile, kinds: Sequence[str], macs: Sequence[int | None]) -> Profile:
    """``profile`` with these layer types and MACs."""
    layers = [LayerProfile(index=layer.index, name=layer.name, type=kind, time_s=layer.time_s,
                           macs=m) for layer, kind, m in zip(profile.layers, kinds, macs,
                                                              strict=True)]
    return profile.model_copy(update={"layers": layers})


def test_neurosurgeon_plans_a_model_it_never_timed_from_other_models() -> None:
    # Peer A: a convolution of 1e6 MACs takes 1 ms + 10 us overhead, 3e6 MACs 3 ms + 10 us; a
    # ReLU over 2,000 bytes read and written takes the overhead alone.
    peer = typed(make_profile("a", times=(0.00101, 0.00301, 0.00001), sizes=(1000,) * 4,
                              calibration=[(0.5, 0.01212), (1.0, 0.00606)], forward_s=0.00303),
                 ["Conv2d", "Conv2d", "ReLU"], [10**6, 3 * 10**6, None])
    # The planned model's own times are absurd: the prediction must not use them.
    planned = typed(make_profile("b", times=(9.0, 9.0), sizes=(500, 500, 500)),
                    ["Conv2d", "Softmax"], [2 * 10**6, None])
    predictor = NeurosurgeonPredictor().fit(planned, peers=[peer, planned])
    assert not predictor.in_sample_
    assert predictor.regression_.overhead_s == pytest.approx(0.00001)
    # The convolution: overhead + 2e6 MACs at 1 ns each; Softmax, a type no peer has, takes
    # the slope pooled over non-MAC types (0 here: the ReLU is all overhead).
    assert predictor.edge_layer_s_ == pytest.approx([0.00201, 0.00001])
    assert predictor.cloud_layer_s_ == pytest.approx(predictor.edge_layer_s_)
    # The clock law comes from the peer's calibration: twice as slow at half its 2 GHz.
    p = predictor.predict(Conditions(bandwidth_kbps=8, rtt_ms=0, clock_ghz=1.0))
    assert p.edge_s == pytest.approx([0.0, 0.00402, 0.00404], rel=1e-3)
    assert p.offload_bytes == (500, 500, 500)


def test_neurosurgeon_fits_its_own_profile_only_when_no_other_model_is_profiled() -> None:
    planned = typed(make_profile("b", times=(0.002, 0.0001), sizes=(300, 200, 100)),
                    ["Linear", "ReLU"], [10**6, None])
    predictor = NeurosurgeonPredictor().fit(planned, peers=[planned])
    assert predictor.in_sample_
    assert sum(predictor.edge_layer_s_) == pytest.approx(0.0021, rel=0.05)


def test_neurosurgeon_estimates_macs_from_shapes_where_none_were_recorded() -> None:
    from edgesplit.core.predictors import layer_features

    profile = Profile.model_validate({
        **make_profile(times=(0.1, 0.2), sizes=(0, 0, 0)).model_dump(),
        "split_points": [
            {"split_point": 0, "layer": "input", "offload_bytes": 3 * 8 * 8 * 4,
             "tensors": [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]},
            {"split_point": 1, "layer": "l1", "offload_bytes": 16 * 6 * 6 * 4,
             "tensors": [{"name": "c", "shape": [1, 16, 6, 6], "dtype": "float32"}]},
            {"split_point": 2, "layer": "l2", "offload_bytes": 40,
             "tensors": [{"name": "y", "shape": [1, 10], "dtype": "float32"}]}]})
    profile = typed(profile, ["Conv2d", "Linear"], [None, None])
    # A 3x3 kernel is assumed: 576 outputs x 3 channels x 9; the linear layer flattens its
    # 16x6x6 input: 10 outputs x 576.
    assert layer_features(profile) == [("Conv2d", 576 * 3 * 9), ("Linear", 10 * 576)]


def test_predictors_refuse_to_predict_before_fit() -> None:
    for name in ("profile", "thesis", "neurosurgeon"):
        with pytest.raises(NotFitted, match="call fit"):
            make_predictor(name).predict(Conditions(1000, 10, 1.0))


@pytest.mark.parametrize(("bandwidth", "rtt", "clock", "message"), [
    (0, 10, 1.0, "bandwidth_kbps must be more than 0"),
    (-5, 10, 1.0, "bandwidth_kbps must be more than 0"),
    (1000, -1, 1.0, "rtt_ms must be 0 or more"),
    (1000, 10, 0, "clock_ghz must be more than 0"),
    (math.nan, 10, 1.0, "must be a finite number"),
    (1000, math.inf, 1.0, "must be a finite number"),
])
def test_conditions_are_checked(bandwidth: float, rtt: float, clock: float, message: str) -> None:
    with pytest.raises(InvalidConditions, match=message):
        Conditions(bandwidth, rtt, clock)
