"""The report's statistics (``evaluation.statistics``), on numbers whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from edgesplit.core.policies import weighted_choice
from edgesplit.evaluation import statistics as st

pytestmark = pytest.mark.fast  # pure: numbers in, records out


def test_bootstrap_interval_covers_the_true_mean_and_is_reproducible() -> None:
    values = np.random.default_rng(1).normal(0.05, 0.02, 200)
    interval = st.bootstrap_interval(values, seed=7)
    assert interval.low < 0.05 < interval.high
    assert interval.high - interval.low < 0.01  # about 4 standard errors (0.0014 each)
    assert st.bootstrap_interval(values, seed=7) == interval
    assert st.bootstrap_interval(values, seed=8) != interval


def test_regrets_per_objective() -> None:
    # One setting, three split points: (latency, cost) = (1, 10), (2, 5), (1.2, 6).
    lat, cost = np.array([[1.0, 2.0, 1.2]]), np.array([[10.0, 5.0, 6.0]])
    x, y = np.array([[1.1]]), np.array([[10.0]])  # one chooser, measured at (1.1, 10)
    assert st.regrets("latency", lat, cost, x, y)[0, 0] == pytest.approx(0.1)
    assert st.regrets("cost", lat, cost, x, y)[0, 0] == pytest.approx(1.0)
    # The weighted score, scaled between the front's extremes (latency 1 to 2, cost 5 to 10):
    # split 2 scores 0.5 * 0.2 + 0.5 * 0.2 = 0.2, the least, as core's weighted_choice picks;
    # the chooser 0.5 * 0.1 + 0.5 * 1 = 0.55: regret 0.35.
    assert weighted_choice([1.0, 2.0, 1.2], [10.0, 5.0, 6.0], 0.5) == 2
    assert st.regrets("weighted", lat, cost, x, y)[0, 0] == pytest.approx(0.35)
    assert st.regrets("weighted", lat, cost, np.array([[1.2]]), np.array([[6.0]]))[0, 0] == 0


def _panel(a: list[float], b: list[float]) -> st.Panel:
    """Four settings, two split points (0: 1 s everywhere, 1: 2 s), three quiet repeats;
    choosers ``a`` and ``b`` measured at the given latencies (cost 1)."""
    oracle = np.stack([np.full((4, 3), 1.0), np.full((4, 3), 2.0)], axis=1)
    return st.Panel(oracle, np.ones_like(oracle),
                    {"a": (np.repeat(np.array(a)[:, None], 3, 1), np.ones((4, 3))),
                     "b": (np.repeat(np.array(b)[:, None], 3, 1), np.ones((4, 3)))})


def test_paired_comparison_has_the_sign_of_the_better_chooser() -> None:
    panel = _panel([1.0, 1.0, 1.02, 1.0], [1.5, 2.0, 1.0, 1.8])
    point, boot = st.draw_medians(panel, seed=3, draws=500)
    names = ["a", "b"]
    regrets = point.regrets("latency", names)[0]
    assert regrets[0] == pytest.approx([0, 0, 0.02, 0])
    (pair,) = st.paired(names, regrets, boot.regrets("latency", names), tie_band=0.05)
    assert (pair.a, pair.b, pair.settings) == ("a", "b", 4)
    assert pair.difference.value == pytest.approx((-0.5 - 1.0 + 0.02 - 0.8) / 4)
    assert pair.difference.high < 0  # a is better: the whole interval below 0
    assert (pair.wins, pair.ties, pair.losses) == (3, 1, 0)  # 0.02 is within the band
    (reverse,) = st.paired(["b", "a"], regrets[::-1], boot.regrets("latency", ["b", "a"]), 0.05)
    assert reverse.difference.low > 0 and (reverse.wins, reverse.losses) == (0, 3)
    summary = {r.chooser: r for r in st.summarise(names, regrets,
                                                  boot.regrets("latency", names))}
    assert summary["a"].median.value == 0 and summary["b"].mean.value == pytest.approx(0.575)


def test_best_fixed_is_the_split_with_the_least_mean_regret() -> None:
    oracle = np.array([[[1.0], [1.1]], [[3.0], [1.0]]])  # setting 0: split 0; 1: split 1
    panel = st.Panel(oracle, np.ones_like(oracle), {})
    assert st.best_fixed("latency", panel) == 1  # mean regret 0.05 against 1.0


def test_noise_floor_is_judged_on_held_out_repeats() -> None:
    # One setting; split 0 measured 0.5, 1.0, 1.2 (median 1.0), split 1 0.9 thrice.
    # In sample: repeat 0 alone picks split 0 (0.5): 1.0 / 0.9 - 1 = 11.1% against the medians;
    # repeats 1 and 2 pick split 1, the medians' best: the floor is 11.1% / 3 = 3.7%.
    # Held out, each pick is judged on the other two repeats' medians: repeat 0's split 0 at
    # 1.1 against 0.9 (22.2%); repeat 1's split 1 at 0.9 against split 0's 0.85 (5.9%);
    # repeat 2's split 1 at 0.9 against 0.75 (20%): 16.0%, four times the in-sample figure.
    lat = np.array([[[0.5, 1.0, 1.2], [0.9, 0.9, 0.9]]])
    floor = st.noise_floor("latency", lat, np.ones_like(lat), seed=0, draws=100)
    assert floor.in_sample.value == pytest.approx((1.0 / 0.9 - 1) / 3)
    held = (1.1 / 0.9 - 1 + 0.9 / 0.85 - 1 + 0.9 / 0.75 - 1) / 3
    assert floor.held_out is not None
    assert floor.held_out.value == pytest.approx(held)
    assert floor.per_setting == pytest.approx((held,))
    single = st.noise_floor("latency", lat[:, :, :1], np.ones_like(lat[:, :, :1]), seed=0)
    assert single.held_out is None  # nothing to hold out with one repeat


def test_hypervolume_of_known_points() -> None:
    staircase = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    assert st.hypervolume(staircase, (4.0, 4.0)) == 3 + 2 + 1
    assert st.hypervolume([*staircase, (3.0, 3.0), (5.0, 0.5)], (4.0, 4.0)) == 6  # dominated,
    assert st.hypervolume([], (4.0, 4.0)) == 0  # and beyond the reference, add nothing
    lat, cost = np.array([[1.0, 2.0, 3.0]]), np.array([[3.0, 2.0, 1.0]])
    shares = st.hypervolume_shares(lat, cost, {"all": [(lat[:, i], cost[:, i]) for i in
                                                       range(3)],
                                               "middle": [(lat[:, 1], cost[:, 1])]}, seed=0)
    assert shares["all"].value == 1
    # Scaled to [0, 1] with reference 1.1: the middle point alone covers 0.6 x 0.6 of
    # 1.1 x 0.1 + 0.6 x 0.5 + 0.1 x 0.5 (= 0.46).
    assert shares["middle"].value == pytest.approx(0.36 / 0.46)


def test_percentage_error_and_its_spread() -> None:
    spread = st.percentage_error([1.1, 0.9, 2.0, 5.0, np.nan], [1.0, 1.0, 1.0, 0.0, 1.0])
    assert spread is not None
    assert spread.n == 3  # a zero and a missing measurement are left out
    assert spread.median == pytest.approx(0.1)
    assert (spread.q25, spread.q75) == pytest.approx((0.1, 0.55))
    assert st.percentage_error([1.0], [np.nan]) is None


def test_ratio_of_sums_is_table_7_1s_comparison() -> None:
    ratio = st.ratio_of_sums(np.array([2.0, 4.0]), np.array([1.0, 2.0]), seed=0)
    assert (ratio.value, ratio.low, ratio.high) == pytest.approx((100.0, 100.0, 100.0))


def test_table_7_1_differences_are_said_as_they_are() -> None:
    from edgesplit.evaluation.evidence import _explain

    choices = [("CL", (6, 14, 15)), ("OC", (0, 15, 15))]
    inside = _explain(st.Interval(35.2, 21.0, 50.3), 25.92, choices)
    assert inside.startswith("The thesis's +25.92% lies inside our interval: this run cannot")
    assert "CL chose split 6 in 14 of 15 settings; OC chose split 0 in 15 of 15" in inside
    larger = _explain(st.Interval(128.97, 107.1, 155.8), 39.77, choices)
    assert larger.startswith("Same direction as the thesis's +39.77%, 3.2x its size (by +89.20")
    opposite = _explain(st.Interval(-5.45, -9.7, -1.5), 3.29, choices)
    assert opposite.startswith("Opposite in direction to the thesis's +3.29%")
    zero = _explain(st.Interval(12.73, 5.7, 21.2), 0.0, [("CL", (8, 15, 15)), ("OC", (8, 15, 15))])
    assert zero.startswith("The thesis reports no difference (0.00%); ours differs by +12.73")
    assert zero.endswith("the same split everywhere, so ours is the noise between their runs "
                         "at one split.")
    assert "agree" not in " ".join((inside, larger, opposite, zero))
