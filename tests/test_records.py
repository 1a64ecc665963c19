"""What an inference did, turned into its log rows: pure functions, checked with round numbers."""

from __future__ import annotations

import pytest

from edgesplit.core.cost import cost_usd
from edgesplit.core.planning import Objective, plan_prediction
from edgesplit.core.predictors import Conditions, Prediction
from edgesplit.edge.records import (
    CloudPart,
    Context,
    Ran,
    layer_rows,
    local_candidate,
    measurement_of,
)

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)

CONDITIONS = Conditions(bandwidth_kbps=8000, rtt_ms=40, clock_ghz=1.5)
OBJECTIVE = Objective("latency", edge="rent")
PLAN = plan_prediction("toy", ("input", "a", "b", "c"),
                       Prediction(edge_s=(0.0, 0.1, 0.2, 0.3), comm_s=(0.5, 0.2, 0.1, 0.05),
                                  cloud_s=(0.3, 0.2, 0.1, 0.0),
                                  offload_bytes=(4000, 3000, 2000, 1000), codec=("raw",) * 4),
                       CONDITIONS, OBJECTIVE)
CONTEXT = Context(seq=3, run="r", time="2026-01-01T00:00:00.000+00:00", elapsed_s=1.23456789,
                  model="toy", predictor="profile", objective=OBJECTIVE, conditions=CONDITIONS,
                  replan="")
NAMES = ("a", "b", "c")


def offloaded() -> Ran:
    return Ran(split_point=1, codec="raw", edge_layers_s=(0.1,), edge_s=0.12, codec_s=0.02,
               offload_bytes=3000, encoded_bytes=3000, latency_s=0.6, deadline_s=1.0,
               cloud=CloudPart(cloud_s=0.2, layer_times_s=(0.15, 0.05), sent_bytes=3400,
                               response_bytes=1000))


def test_an_offload_splits_its_latency_into_edge_network_and_cloud() -> None:
    m = measurement_of(offloaded(), CONTEXT, PLAN.candidate(1), top1_class=7)
    assert (m.edge_s, m.cloud_s, m.latency_s) == (0.12, 0.2, 0.6)
    assert m.comm_s == pytest.approx(0.28)
    # Equation 3.3: less half the RTT (20 ms) and the answer's time (1000 B at 8 Mbit/s: 1 ms).
    assert m.comm_thesis_s == pytest.approx(0.28 - 0.02 - 0.001)
    assert m.cost_usd == cost_usd(0.12, 0.2, 3400, OBJECTIVE.edge, OBJECTIVE.prices)
    assert (m.finished, m.fallback, m.sent_bytes, m.top1_class) == ("cloud", "", 3400, 7)
    assert m.predicted_latency_s == pytest.approx(0.1 + 0.2 + 0.2)
    assert m.elapsed_s == 1.234568


def test_an_inference_the_edge_finished_is_all_edge_time_and_predicted_so() -> None:
    ran = Ran(split_point=1, codec="raw", edge_layers_s=(0.1, 0.1, 0.1), edge_s=0.12,
              codec_s=0.02, offload_bytes=3000, encoded_bytes=3000, latency_s=1.5,
              deadline_s=1.0, fallback="the cloud did not answer within 1.00 s")
    predicted = local_candidate(PLAN, 0.33)
    m = measurement_of(ran, CONTEXT, predicted, top1_class=7)
    assert (m.edge_s, m.comm_s, m.comm_thesis_s, m.cloud_s) == (1.5, 0.0, 0.0, 0.0)
    assert (m.finished, m.sent_bytes) == ("edge", 0)
    assert m.cost_usd == cost_usd(1.5, 0.0, 0, OBJECTIVE.edge, OBJECTIVE.prices)
    # What ran was the whole model on the edge: no network or cloud time predicted for it.
    assert (m.predicted_edge_s, m.predicted_comm_s, m.predicted_cloud_s) == (0.33, 0.0, 0.0)
    assert m.predicted_latency_s == 0.33
    assert m.predicted_cost_usd == cost_usd(0.33, 0.0, 0, OBJECTIVE.edge, OBJECTIVE.prices)
    assert predicted.split_point == 3 and predicted.offload_bytes == 0


def test_layer_rows_name_each_side() -> None:
    rows = layer_rows(offloaded(), CONTEXT, NAMES)
    assert [(r.side, r.index, r.layer, r.time_s) for r in rows] == [
        ("edge", 1, "a", 0.1), ("cloud", 2, "b", 0.15), ("cloud", 3, "c", 0.05)]
    assert {(r.seq, r.run) for r in rows} == {(3, "r")}
