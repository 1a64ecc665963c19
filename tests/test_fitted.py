"""fit_predictor and build_planner (pure: profiles passed in), and the cache that finds peers and
remembers laws (``measuring.store``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgesplit.core.fitted import build_planner, fit_predictor
from edgesplit.core.fitting import fit_power_law
from edgesplit.core.planning import Objective
from edgesplit.core.predictors import Conditions, ThesisPredictor
from edgesplit.core.profiles import Profile
from edgesplit.measuring.store import LawMemo, cached_predictor, cached_profile_path, store_profile

from .helpers import make_profile

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)


def network(model: str, n: int, latencies: dict[float, float]) -> Profile:
    return make_profile(model, times=[0.5 / n] * n, sizes=[1000] * (n + 1),
                        calibration=sorted(latencies.items()), forward_s=0.5)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGESPLIT_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_the_thesis_predictor_learns_from_every_cached_peer(cache: Path) -> None:
    a = network("a", 10, {0.6: 1.0, 1.0: 0.6, 1.5: 0.4})
    b = network("b", 4, {0.6: 2.0, 1.0: 1.9, 1.5: 0.5})
    alone = ThesisPredictor().fit(a)
    for profile in (a, b):
        store_profile(profile, cached_profile_path(profile.model, profile.machine))
    fitted = cached_predictor("thesis", a)
    assert isinstance(fitted, ThesisPredictor)
    assert len(fitted.points_) == 6  # a's three clocks and b's three
    assert fitted.law_ == ThesisPredictor().fit(a, peers=[a, b]).law_
    assert fitted.law_ != alone.law_


def test_a_remembered_law_is_the_fitted_one_to_the_last_bit(cache: Path) -> None:
    x, y = [0.6, 0.9, 1.2, 1.5], [0.31, 0.2, 0.17, 0.129]
    memo = LawMemo()
    first = memo(x, y)
    assert first == fit_power_law(x, y)
    assert len(json.loads((cache / "laws.json").read_text())) == 1
    (cache / "laws.json").write_text(json.dumps(
        {key: [2.0, -1.0] for key in json.loads((cache / "laws.json").read_text())}))
    assert memo(x, y).b == -1.0  # read back, not fitted again
    assert memo([0.6, 1.5], [0.3, 0.1]) == fit_power_law([0.6, 1.5], [0.3, 0.1])


def test_storing_a_profile_remembers_what_planning_will_fit(cache: Path) -> None:
    a = network("a", 10, {0.6: 1.0, 1.0: 0.6, 1.5: 0.4})
    store_profile(a, cached_profile_path("a", a.machine))
    remembered = len(json.loads((cache / "laws.json").read_text()))
    # The profile predictor's clock law, the thesis law and the neurosurgeon's relative law
    # (with no other model cached, fitted on a's own calibration).
    assert remembered == 3
    conditions = Conditions(bandwidth_kbps=1000, rtt_ms=20, clock_ghz=1.2)
    for name in ("profile", "thesis", "neurosurgeon"):
        assert cached_predictor(name, a).predict(conditions).latency_s
    assert len(json.loads((cache / "laws.json").read_text())) == remembered


def test_an_unreadable_memo_is_fitted_again(cache: Path) -> None:
    (cache / "laws.json").write_text("{not json")
    assert LawMemo()([1.0, 2.0], [2.0, 1.0]) == fit_power_law([1.0, 2.0], [2.0, 1.0])


def test_the_pure_fit_and_planner_learn_only_from_the_profiles_passed_in(cache: Path) -> None:
    a = network("a", 10, {0.6: 1.0, 1.0: 0.6, 1.5: 0.4})
    b = network("b", 4, {0.6: 2.0, 1.0: 1.9, 1.5: 0.5})
    store_profile(b, cached_profile_path("b", b.machine))
    fitted = fit_predictor("thesis", a)
    assert isinstance(fitted, ThesisPredictor)
    assert len(fitted.points_) == 3  # a's own clocks: the cached peer b is not read
    planner = build_planner("a", a, Objective("latency", 0.0, "own"), predictor="thesis",
                            peers=[a, b])
    assert planner.plan(Conditions(1000, 20, 1.2)).split_point in range(11)
