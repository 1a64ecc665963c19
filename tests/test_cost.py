from __future__ import annotations

from typing import Any

import pytest

from edgesplit.core.cost import EdgeMode, Prices, cost_usd, cost_vector
from edgesplit.core.planning import Objective, Planner
from edgesplit.core.predictors import Conditions, ProfilePredictor
from edgesplit.errors import InvalidArgument

from .helpers import make_profile

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)


def test_rented_edge_pays_for_edge_and_cloud_seconds() -> None:
    # 1 s at $0.224/h on the edge plus 2 s at $0.1664/h in the cloud.
    assert cost_usd(1.0, 2.0, 0, EdgeMode.RENT) == pytest.approx((0.224 + 2 * 0.1664) / 3600)


def test_owned_edge_pays_only_for_the_cloud_by_default() -> None:
    assert cost_usd(1.0, 2.0, 10**9, EdgeMode.OWN) == pytest.approx(2 * 0.1664 / 3600)
    assert cost_usd(5.0, 0.0, 0, EdgeMode.OWN) == 0


def test_transfer_and_energy_prices_are_added_when_given() -> None:
    prices = Prices(transfer_usd_per_gb=0.09, edge_power_w=6.0, energy_usd_per_kwh=0.3)
    # 6 W for 1 s is 6 J = 6 / 3.6e6 kWh; 500 MB at $0.09/GB.
    expected = 6 / 3.6e6 * 0.3 + 2 * 0.1664 / 3600 + 0.5 * 0.09
    assert cost_usd(1.0, 2.0, 500_000_000, EdgeMode.OWN, prices) == pytest.approx(expected)
    rented = cost_usd(1.0, 2.0, 500_000_000, EdgeMode.RENT, prices)
    assert rented == pytest.approx((0.224 + 2 * 0.1664) / 3600 + 0.5 * 0.09)


def test_cost_vector_agrees_with_cost_usd() -> None:
    edge, cloud, sizes = (0.0, 0.5, 1.0), (1.0, 0.5, 0.0), (300, 200, 100)
    prices = Prices(transfer_usd_per_gb=1.0)
    for mode in EdgeMode:
        assert cost_vector(edge, cloud, sizes, mode, prices) == pytest.approx(
            [cost_usd(e, c, b, mode, prices) for e, c, b in zip(edge, cloud, sizes, strict=True)])


def test_negative_prices_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="cloud_usd_per_hour must be 0 or more"):
        Prices(cloud_usd_per_hour=-1)


def test_own_and_rent_pull_the_cheapest_split_opposite_ways() -> None:
    profile = make_profile(times=(0.1, 0.2, 0.3), sizes=(4000, 3000, 2000, 1000))
    predictor = ProfilePredictor().fit(profile)
    conditions = Conditions(bandwidth_kbps=1000, rtt_ms=10, clock_ghz=2.0)
    layers = [layer.name for layer in profile.layers]
    own = Planner("toy", layers, predictor, Objective("cost", edge="own")).plan(conditions)
    rent = Planner("toy", layers, predictor, Objective("cost", edge="rent")).plan(conditions)
    assert own.split_point == 3  # an owned edge is free: keep everything on it
    assert rent.split_point == 0  # a rented edge costs more than the cloud: offload at once


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weight": 1.5}, "weight must be between 0 and 1"),
    ({"strategy": "fastest"}, "unknown strategy 'fastest'"),
    ({"edge": "lease"}, "unknown edge mode 'lease'"),
    ({"strategy": "slo"}, "needs a deadline"),
    ({"strategy": "budget"}, "needs a cost cap"),
    ({"strategy": "slo", "deadline_ms": -3}, "deadline_ms must be a positive number"),
    ({"margin": -0.1}, "margin must be at least 0 and below 1"),
])
def test_objectives_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Objective(**kwargs)


def test_plan_records_the_chosen_row_and_pareto_front() -> None:
    profile = make_profile(times=(0.1, 0.2, 0.3), sizes=(4000, 3000, 2000, 1000))
    predictor = ProfilePredictor().fit(profile)
    conditions = Conditions(bandwidth_kbps=1000, rtt_ms=10, clock_ghz=2.0)
    plan = Planner("toy", ["a", "b", "c"], predictor,
                   Objective("slo", edge="rent", deadline_ms=10_000)).plan(conditions)
    assert plan.chosen == plan.candidates[plan.split_point]
    assert [c.layer for c in plan.candidates] == ["input", "a", "b", "c"]
    data = plan.to_dict()
    assert data["split_point"] == plan.split_point
    assert data["predicted"]["latency_s"] == pytest.approx(plan.chosen.latency_s)
    assert data["pareto"] == list(plan.pareto)
    assert {c["split_point"] for c in data["candidates"]} == {0, 1, 2, 3}
    assert data["codec"] == "raw"


def test_the_planner_gives_each_split_point_its_fastest_allowed_codec() -> None:
    profile = make_profile(times=(0.1, 0.2, 0.3), sizes=(40_000, 30_000, 20_000, 1000))
    predictor = ProfilePredictor().fit(profile)
    conditions = Conditions(bandwidth_kbps=1000, rtt_ms=10, clock_ghz=2.0)
    planner = Planner("toy", ["a", "b", "c"], predictor, Objective("latency"),
                      codecs=("raw", "float16", "int8+zstd"))
    plan = planner.plan(conditions)
    assert {c.codec for c in plan.candidates} == {"int8+zstd"}  # smallest, no learned cost yet
    assert plan.chosen.offload_bytes < 40_000
    excluded = planner.plan(conditions, exclude=frozenset({(0, "int8+zstd")}))
    assert excluded.candidates[0].codec == "float16"
    assert excluded.candidates[1].codec == "int8+zstd"
