"""The fleet simulation: every inference answered once; load-aware edges feel a busy cloud."""

from __future__ import annotations

import pytest

from edgesplit.core.planning import Objective, Planner
from edgesplit.core.predictors import Conditions, ProfilePredictor
from edgesplit.evaluation.fleet import FleetConfig, FleetSimulation

from .helpers import make_profile

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)

# The edge is ten times slower than the cloud: offloading the input (1 kB) is fastest when idle.
EDGE = make_profile(times=[0.05, 0.05, 0.05], sizes=(1000, 800, 600, 400))
CLOUD = make_profile(times=[0.005, 0.005, 0.005], sizes=(1000, 800, 600, 400))


def run(config: FleetConfig, aware: bool) -> dict[str, float]:
    predictor = ProfilePredictor().fit(EDGE, CLOUD)
    planner = Planner("toy", ["l1", "l2", "l3"], predictor, Objective("latency"))
    tail_s = predictor.predict(Conditions(1000, 1, 2.0)).cloud_s
    result = FleetSimulation(config, planner, predictor, tail_s, load_aware=aware).run()
    assert result.plans == len(result.latencies_s) == len(result.split_points)
    assert all(latency > 0 for latency in result.latencies_s)
    return result.summary()


def test_a_quiet_cloud_gets_the_work_either_way() -> None:
    config = FleetConfig(edges=5, replicas=2, duration_s=30, interval_s=2)
    blind, aware = run(config, aware=False), run(config, aware=True)
    assert blind["mean_split"] == aware["mean_split"] == 0
    again = run(config, aware=False)  # seeded: the same fleet gives the same figures
    assert {k: v for k, v in blind.items() if k != "plan_us"} == \
        {k: v for k, v in again.items() if k != "plan_us"}


def test_load_aware_edges_move_the_split_and_beat_load_blind_ones() -> None:
    # 200 edges, an inference every 0.5 s each, one replica at 15 ms a tail: 6x overloaded.
    config = FleetConfig(edges=200, replicas=1, duration_s=20, interval_s=0.5)
    blind, aware = run(config, aware=False), run(config, aware=True)
    assert blind["mean_split"] == blind["edge_only_pct"] == 0
    assert aware["edge_only_pct"] > 20
    assert aware["mean_ms"] < blind["mean_ms"] / 2
