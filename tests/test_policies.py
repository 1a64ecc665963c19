from __future__ import annotations

import random

import pytest

from edgesplit.core.policies import (
    Strategy,
    budget_choice,
    cheapest,
    choose,
    fastest,
    pareto_front,
    rank_advantage,
    rank_choice,
    slo_choice,
    weighted_choice,
)

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)


def walk_algorithm_1(latency: list[float], cost: list[float], weight: float) -> int:
    """Algorithm 1 exactly as docs/design.md section 4 words it: read both lists step by step."""
    n = len(latency)
    by_latency = sorted(range(n), key=lambda sp: (latency[sp], cost[sp], sp))
    by_cost = sorted(range(n), key=lambda sp: (cost[sp], latency[sp], sp))
    k = round(n * abs(weight - 0.5) * 2 + 1e-9)
    favoured, other = (by_cost, by_latency) if weight > 0.5 else (by_latency, by_cost)
    for i in range(n):
        read_favoured = favoured[: i + 1]
        read_other = other[: min(i + k, n - 1) + 1]
        matches = [sp for sp in read_favoured if sp in read_other]
        if matches:
            if weight == 0.5:
                return min(matches, key=lambda sp: (by_latency.index(sp) + by_cost.index(sp),
                                                    latency[sp]))
            return matches[0]
    raise AssertionError("the walk always ends with a match by the last step")


# Twenty candidates: cost rises with the split point (a rented edge), latency is best at 15.
LATENCY_ORDER = [15, 13, 1, 14, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 17, 18, 19]
LATENCY = [0.0] * 20
for rank, sp in enumerate(LATENCY_ORDER):
    LATENCY[sp] = 1.0 + rank * 0.1
COST = [float(sp) for sp in range(20)]


def test_the_thesis_example_w_055_twenty_candidates_gives_cost_an_advantage_of_two() -> None:
    assert rank_advantage(20, 0.55) == 2
    # Step 0 reads C[0] = {0} and L[0..2] = {15, 13, 1}: no match. Step 1 reads C[0..1] =
    # {0, 1} and L[0..3] = {15, 13, 1, 14}: split point 1 is in both.
    assert rank_choice(LATENCY, COST, 0.55) == 1


def test_algorithm_1_worked_examples() -> None:
    assert rank_choice(LATENCY, COST, 0.0) == 15  # latency only: the fastest
    assert rank_choice(LATENCY, COST, 1.0) == 0  # cost only: the cheapest
    # w = 0.5: split point 1 is in both prefixes at step 2 (latency rank 2, cost rank 1);
    # nothing is earlier (0 at step 4, 13 at step 13, 15 at step 15).
    assert rank_choice(LATENCY, COST, 0.5) == 1
    # w = 0.15: k = 14, latency favoured: 13 enters both at step max(1, 13 - 14) = 1, but 15
    # enters at step max(0, 15 - 14) = 1 too and comes first in the latency list.
    assert rank_advantage(20, 0.15) == 14
    assert rank_choice(LATENCY, COST, 0.15) == 15
    # w = 0.2: k = 12: 15 enters at step 3, 13 at step 1, 1 at step 2: 13 wins.
    assert rank_choice(LATENCY, COST, 0.2) == 13


@pytest.mark.parametrize("seed", range(200))
def test_rank_choice_matches_the_literal_walk(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    latency = [round(rng.uniform(0, 1), 2) for _ in range(n)]  # rounding makes ties
    cost = [round(rng.uniform(0, 1), 2) for _ in range(n)]
    for weight in (0.0, 0.1, 0.25, 0.45, 0.5, 0.55, 0.7, 0.9, 1.0, rng.random()):
        assert rank_choice(latency, cost, weight) == walk_algorithm_1(latency, cost, weight)


def test_pareto_front_keeps_exactly_the_undominated_points() -> None:
    latency = [5.0, 4.0, 3.0, 3.0, 2.0, 1.0, 6.0, 1.0]
    cost = [1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 1.0, 5.0]
    # 3 is beaten by 2 (same latency, cheaper); 6 by 0 (cheaper-or-equal and faster);
    # 5 and 7 are equal twins: both stay.
    assert pareto_front(latency, cost) == (5, 7, 4, 2, 1, 0)


@pytest.mark.parametrize("seed", range(50))
def test_pareto_front_matches_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 30)
    latency = [rng.randint(0, 8) for _ in range(n)]
    cost = [rng.randint(0, 8) for _ in range(n)]

    def dominated(i: int) -> bool:
        return any(latency[j] <= latency[i] and cost[j] <= cost[i]
                   and (latency[j] < latency[i] or cost[j] < cost[i]) for j in range(n))

    assert set(pareto_front(latency, cost)) == {i for i in range(n) if not dominated(i)}


def test_fastest_and_cheapest_break_ties_by_the_other_objective() -> None:
    latency = [2.0, 1.0, 1.0, 3.0]
    cost = [1.0, 5.0, 4.0, 1.0]
    assert fastest(latency, cost) == 2
    assert cheapest(latency, cost) == 0


def test_noise_aware_fastest_keeps_the_cheaper_split_it_cannot_tell_from_the_fastest() -> None:
    latency = [1.00, 0.97, 0.90, 1.20]
    cost = [1.0, 2.0, 5.0, 0.5]
    assert fastest(latency, cost, margin=0.0) == 2
    # 5% of 0.90 s is 0.045 s: split 1 (0.97 s) is told apart, so the fastest stays.
    assert fastest(latency, cost, margin=0.05) == 2
    # 10% (0.99 s): split 1 cannot be told from split 2 and is cheaper; split 0 (1.00 s) can.
    assert fastest(latency, cost, margin=0.10) == 1
    # 12% (1.008 s): split 0 cannot either, and is the cheapest of the three.
    assert choose(Strategy.LATENCY, latency, cost, margin=0.12).split_point == 0
    assert choose(Strategy.COST, latency, cost, margin=0.12).split_point == 3  # latency only


def test_weighted_sum_moves_along_the_front_with_the_weight() -> None:
    latency = [1.0, 2.0, 3.0, 4.0, 2.5]
    cost = [4.0, 2.0, 1.5, 1.0, 3.0]  # 4 is dominated by 1
    assert weighted_choice(latency, cost, 0.0) == 0
    assert weighted_choice(latency, cost, 1.0) == 3
    # Normalised: latency (0, 1/3, 2/3, 1), cost (1, 1/3, 1/6, 0). At w = 0.5 the sums are
    # 0.5, 1/3, 5/12, 0.5: split point 1.
    assert weighted_choice(latency, cost, 0.5) == 1
    assert weighted_choice([1.0], [1.0], 0.5) == 0


def test_slo_picks_the_cheapest_split_that_meets_the_deadline() -> None:
    latency = [0.9, 0.5, 0.3, 0.2]
    cost = [1.0, 2.0, 3.0, 4.0]
    assert slo_choice(latency, cost, 0.6).split_point == 1
    assert slo_choice(latency, cost, 0.6).constraint_met
    missed = slo_choice(latency, cost, 0.1)
    assert missed.split_point == 3 and not missed.constraint_met


def test_budget_picks_the_fastest_split_within_the_cap() -> None:
    latency = [0.9, 0.5, 0.3, 0.2]
    cost = [1.0, 2.0, 3.0, 4.0]
    assert budget_choice(latency, cost, 3.0).split_point == 2
    over = budget_choice(latency, cost, 0.5)
    assert over.split_point == 0 and not over.constraint_met


def test_choose_dispatches_every_strategy() -> None:
    latency = [0.9, 0.5, 0.3, 0.2]
    cost = [1.0, 2.0, 3.0, 4.0]
    picks = {s: choose(s, latency, cost, weight=0.5, deadline_s=0.4, max_cost_usd=2.5)
             for s in Strategy}
    assert picks[Strategy.LATENCY].split_point == 3
    assert picks[Strategy.COST].split_point == 0
    assert picks[Strategy.SLO].split_point == 2
    assert picks[Strategy.BUDGET].split_point == 1
    assert picks[Strategy.RANK].split_point == rank_choice(latency, cost, 0.5)
    assert picks[Strategy.WEIGHTED].split_point == weighted_choice(latency, cost, 0.5)


def test_every_strategy_has_one_rule_and_constrained_ones_name_their_limit() -> None:
    from edgesplit.core.planning import Objective
    from edgesplit.core.policies import STRATEGIES
    from edgesplit.errors import MissingLimit

    assert set(STRATEGIES) == set(Strategy)
    for name, rule in STRATEGIES.items():
        if rule.needs is None:
            continue
        with pytest.raises(MissingLimit, match=f"needs {rule.needs_what}: give {rule.needs}"):
            Objective(name)
        assert rule.needs in Objective.__slots__ and rule.unmet  # a field of the objective
