"""Condition traces, the re-scheduling modes and the dynamic suite's metrics (pure)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from edgesplit.core.predictors import Conditions
from edgesplit.core.rescheduling import ReschedulePolicy, Rescheduler, noise_hysteresis
from edgesplit.errors import InvalidArgument
from edgesplit.evaluation.dynamic_metrics import (
    Change,
    flaps_per_minute,
    reactions,
    replay_metrics,
    top_splits,
    with_regret,
)
from edgesplit.evaluation.traces import (
    change_times,
    library_names,
    load_trace,
    load_traces,
    parse_trace,
    scaled,
)

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)


def test_the_library_holds_the_named_traces_and_each_validates() -> None:
    names = library_names()
    assert {"still", "step-down", "step-up", "ramp", "fade", "rtt-spikes", "throttle",
            "outage", "walk"} <= set(names)
    for trace in load_traces(names):
        assert trace.points[0].t_s == 0 and trace.duration_s > trace.points[-1].t_s
    assert change_times(load_trace("still")) == []
    down = load_trace("step-down")
    assert down.at(19.9).bandwidth_kbps == 10 * down.at(20).bandwidth_kbps
    outage = load_trace("outage")
    assert [p.cloud_up for p in outage.sample(10)] == [True, True, False, False, True, True,
                                                        True]


def test_a_trace_is_a_step_function_and_scales_in_time() -> None:
    trace = parse_trace({"name": "t", "duration_s": 10, "points": [
        {"t_s": 0, "bandwidth_kbps": 1000, "rtt_ms": 10},
        {"t_s": 4, "bandwidth_kbps": 1000, "rtt_ms": 10, "clock_ghz": 0.6},
        {"t_s": 6, "bandwidth_kbps": 100, "rtt_ms": 10, "cloud_up": False}]}, "t")
    assert trace.segment(3.99) == 0 and trace.segment(4) == 1 and trace.segment(99) == 2
    assert change_times(trace) == [4, 6]
    assert change_times(trace, ("bandwidth_kbps",)) == [6]
    assert len(trace.conditions()) == 3
    fast = scaled(trace, 0.5)
    assert fast.duration_s == 5 and change_times(fast) == [2, 3]
    assert fast.at(2.5).clock_ghz == 0.6


@pytest.mark.parametrize(("data", "says"), [
    ({"points": []}, "first point"),
    ({"duration_s": 5, "points": [{"t_s": 1, "bandwidth_kbps": 1, "rtt_ms": 0}]}, "t_s = 0"),
    ({"duration_s": 5, "points": [{"t_s": 0, "bandwidth_kbps": 0, "rtt_ms": 0}]}, "more than 0"),
    ({"duration_s": 5, "points": [{"t_s": 0, "bandwidth_kbps": 1, "rtt_ms": 0, "x": 1}]},
     "unknown fields: x"),
    ({"duration_s": 5, "points": [{"t_s": 0, "bandwidth_kbps": "fast", "rtt_ms": 0}]},
     "must be numbers"),
    ({"duration_s": 5, "points": [{"t_s": 0, "bandwidth_kbps": 1, "rtt_ms": 0},
                                  {"t_s": 0, "bandwidth_kbps": 2, "rtt_ms": 0}]}, "increase"),
    ({"duration_s": 0, "points": [{"t_s": 0, "bandwidth_kbps": 1, "rtt_ms": 0}]}, "duration_s"),
    ({"duration_s": 5, "points": [{"t_s": 0, "bandwidth_kbps": 1, "rtt_ms": 0,
                                   "cloud_up": "yes"}]}, "true or false"),
])
def test_a_bad_trace_is_refused_in_one_line(data: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        parse_trace(data, "mine.json")


def test_a_trace_file_of_ones_own_is_read_and_unknown_names_say_what_exists(
        tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"duration_s": 3, "points": [
        {"t_s": 0, "bandwidth_kbps": 500, "rtt_ms": 5}]}))
    assert load_trace(str(path)).name == "mine"
    with pytest.raises(InvalidArgument, match=r"shipped: .*step-down"):
        load_trace("no-such-trace")
    with pytest.raises(InvalidArgument, match="must differ"):
        load_traces([str(path), str(path)])


def test_each_mode_replans_when_it_should() -> None:
    moved = Conditions(1000, 20, 1.5)
    start = Conditions(10000, 20, 1.5)
    due = {}
    for mode in ("replan", "once", "every", "interval"):
        r = Rescheduler(ReschedulePolicy(interval_s=10, mode=mode))
        first = r.due(0, start)
        r.planned(0, start)
        due[mode] = (first, r.due(1, start), r.due(1, moved), r.due(11, start))
    assert due["replan"] == ("first", None, "bandwidth", "timer")
    assert due["once"] == ("first", None, None, None)
    assert due["every"] == ("first", "every", "every", "every")
    assert due["interval"] == ("first", None, None, "timer")
    assert noise_hysteresis(ReschedulePolicy(mode="every", hysteresis=0.3), 0.1) == 0
    assert noise_hysteresis(ReschedulePolicy(hysteresis=0.3), 0.1) == 0.3
    with pytest.raises(InvalidArgument, match="mode must be one of"):
        ReschedulePolicy(mode="sometimes")


def test_the_best_three_follow_the_objective() -> None:
    latency, cost = [3.0, 1.0, 2.0, 4.0, math.inf], [1.0, 4.0, 3.0, 2.0, math.inf]
    assert top_splits(latency, cost, "OL") == [1, 2, 0]
    assert top_splits(latency, cost, "OC") == [0, 3, 2]
    assert top_splits(latency, cost, "CL", k=1) == [0]  # 0.67 + 0: the best sum


def _rows(splits: list[int], step: float = 1.0, latency: float = 0.1) -> list[dict[str, Any]]:
    return [{"t_s": i * step, "split_point": s, "lost": 0, "latency_s": latency,
             "cost_usd": 1e-6, "probe_bytes": 0, "sent_bytes": 1000} for i, s in enumerate(splits)]


def test_reaction_time_counts_inferences_until_the_split_is_among_the_new_best() -> None:
    rows = _rows([5, 5, 5, 5, 1, 1, 1, 1])
    changes = [Change(2.0, 8.0, frozenset({1, 2}))]
    assert reactions(rows, changes) == [(2, 2.0)]  # t=2 and t=3 still at 5, t=4 at 1
    never = [Change(2.0, 8.0, frozenset({7}))]
    assert reactions(rows, never) == [(6, 6.0)]  # censored: the whole stretch


def test_a_still_trace_has_no_change_to_react_to() -> None:
    from edgesplit.evaluation.dynamic_report import trace_changes

    assert trace_changes(load_trace("still"), {}, "mnist_cnn", "rent", "OL") == []
    changes = trace_changes(load_trace("step-down"), {"mnist_cnn": {
        '[4000.0, 20.0, 0.0, 1.0, true]': {"cloud_up": False}}}, "mnist_cnn", "rent", "OL")
    assert changes == [Change(20.0, 60.0, frozenset({9}))]  # only the edge finishes


def test_flapping_regret_and_totals() -> None:
    rows = _rows([1, 2, 1, 2, 2, 2], step=10)
    assert flaps_per_minute(rows, 60) == 3
    metrics = replay_metrics(rows, [], 60, "rent")
    assert metrics["inferences"] == 6 and metrics["lost"] == 0
    assert metrics["total_latency_s"] == pytest.approx(0.6)
    assert metrics["p99_s"] == pytest.approx(0.1)
    oracle = replay_metrics(_rows([1] * 6, latency=0.08), [], 60, "rent")
    assert with_regret(metrics, oracle)["latency_regret"] == pytest.approx(0.25)
    lost = [*rows, {"t_s": 61, "split_point": math.nan, "lost": 1, "latency_s": math.nan,
                    "cost_usd": math.nan, "probe_bytes": 4000, "sent_bytes": math.nan}]
    counted = replay_metrics(lost, [], 60, "rent")
    assert counted["lost"] == 1 and counted["total_latency_s"] == pytest.approx(0.6)
    assert counted["probe_bytes"] == 4000 and counted["probe_share"] == pytest.approx(0.4)
    assert counted["probe_cost_usd"] == 0  # the thesis's prices charge nothing per byte
