"""Load-aware planning: the cloud's load becomes a wait on every split point with a tail."""

from __future__ import annotations

import pytest

from edgesplit.core.load import TailLoad, expected_wait_s, with_wait
from edgesplit.core.planning import Objective, Planner
from edgesplit.core.predictors import Conditions, ProfilePredictor, ThesisPredictor
from edgesplit.core.rescheduling import ReschedulePolicy, Rescheduler
from edgesplit.errors import InvalidArgument, InvalidConditions

from .helpers import make_profile

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)


def test_expected_wait_is_the_work_held_over_the_slots() -> None:
    loads = [TailLoad("alexnet", 14, queued=6, tail_s=0.02),
             TailLoad("mnist_cnn", 0, queued=4, tail_s=0.001)]
    assert expected_wait_s(loads, slots=2) == pytest.approx((6 * 0.02 + 4 * 0.001) / 2)
    assert expected_wait_s([], slots=4) == 0
    with pytest.raises(InvalidArgument, match="slots must be 1 or more"):
        expected_wait_s(loads, slots=0)


def test_wait_lands_on_every_split_point_with_a_tail() -> None:
    assert with_wait((0.3, 0.2, 0.0), 0.5) == pytest.approx((0.8, 0.7, 0.0))
    assert with_wait((0.3, 0.0), 0.0) == (0.3, 0.0)


@pytest.mark.parametrize("wait_s", [-0.1, float("nan"), float("inf")])
def test_a_negative_or_unknown_wait_is_refused(wait_s: float) -> None:
    with pytest.raises(InvalidConditions, match="cloud_wait_s"):
        Conditions(7200, 40, 1.5, cloud_wait_s=wait_s)


def test_both_predictors_add_the_wait_to_the_cloud_only() -> None:
    profile = make_profile(times=[0.1, 0.2, 0.3], calibration=[(1.0, 1.2), (2.0, 0.6)])
    for predictor in (ProfilePredictor().fit(profile), ThesisPredictor().fit(profile)):
        idle = predictor.predict(Conditions(1000, 20, 2.0))
        busy = predictor.predict(Conditions(1000, 20, 2.0, cloud_wait_s=0.25))
        assert busy.edge_s == idle.edge_s and busy.comm_s == idle.comm_s
        assert [b - i for b, i in zip(busy.cloud_s, idle.cloud_s, strict=True)] == \
            pytest.approx([0.25, 0.25, 0.25, 0.0])


def test_a_busy_cloud_pushes_the_split_toward_the_edge() -> None:
    # A fast link and an edge at half the profiled clock: the fastest split offloads the input,
    # 0.15 s in the cloud against 0.3 s on the edge, until the cloud makes it wait 0.5 s.
    profile = make_profile(times=[0.05, 0.05, 0.05], sizes=(1000, 800, 600, 400))
    planner = Planner("toy", ["l1", "l2", "l3"], ProfilePredictor().fit(profile),
                      Objective("latency"))
    quiet = planner.plan(Conditions(100_000, 1, 1.0))
    busy = planner.plan(Conditions(100_000, 1, 1.0, cloud_wait_s=0.5))
    assert quiet.split_point == 0
    assert busy.split_point == 3
    assert busy.chosen.latency_s < busy.candidate(0).latency_s


def test_a_change_in_the_clouds_wait_is_a_reason_to_replan() -> None:
    rescheduler = Rescheduler(ReschedulePolicy(interval_s=10, wait_change_ms=20))
    rescheduler.planned(0.0, Conditions(7200, 40, 1.5, cloud_wait_s=0.010))
    assert rescheduler.due(1.0, Conditions(7200, 40, 1.5, cloud_wait_s=0.025)) is None
    assert rescheduler.due(1.0, Conditions(7200, 40, 1.5, cloud_wait_s=0.040)) == "cloud load"
    assert rescheduler.due(1.0, Conditions(7200, 40, 1.5, cloud_wait_s=0.0)) is None
