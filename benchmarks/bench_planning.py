"""Planning speed: time to produce a plan from fitted predictors for VGG16 (38 candidates).

    python benchmarks/bench_planning.py [--runs 20000] [--model vgg16] [--models all]

Prints the median time per plan for each strategy and predictor (median over batches of runs, all
measured in this one run), and how that compares with one prediction alone. Target: under 50 us
for VGG16. Then the rank plan of every model in the zoo, with an idle cloud and with a busy one
(a reported wait, which load-aware planning adds to every split point), side by side.
The VGG16 profile is the machine's cached one (measured on first use, without calibration when
none is cached; a fixed clock law is then used, which costs the planner the same). ``--model``
and ``--models`` choose other models (the quick run's: the ones that profile in seconds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

from edgesplit.core import zoo
from edgesplit.core.planning import Objective, Planner
from edgesplit.core.policies import Strategy
from edgesplit.core.predictors import (
    Conditions,
    Predictor,
    ProfilePredictor,
    ThesisPredictor,
)
from edgesplit.measuring.profiler import load_or_profile

CONDITIONS = Conditions(bandwidth_kbps=7200, rtt_ms=40, clock_ghz=1.5)
BUSY = Conditions(bandwidth_kbps=7200, rtt_ms=40, clock_ghz=1.5, cloud_wait_s=0.2)


def per_call_us(call: Callable[[], object], runs: int, batches: int = 20) -> float:
    per_batch = max(1, runs // batches)
    samples = []
    for _ in range(batches):
        began = time.perf_counter()
        for _ in range(per_batch):
            call()
        samples.append((time.perf_counter() - began) / per_batch * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--model", default="vgg16", help="The model of the first table.")
    parser.add_argument("--models", default=",".join(zoo.MODELS),
                        help="The models of the second table, comma-separated.")
    args = parser.parse_args()
    profile = load_or_profile(args.model)
    layers = [layer.name for layer in profile.layers]
    predictors: dict[str, Predictor] = {"profile": ProfilePredictor().fit(profile)}
    if len(profile.calibration) >= 2:
        predictors["thesis"] = ThesisPredictor().fit(profile)
    print(f"{args.model}, {profile.n_layers + 1} candidates, {args.runs} plans per row\n")
    print("| predictor | strategy | us per plan | plan / predict alone |")
    print("|---|---|---|---|")
    for name, predictor in predictors.items():
        predict_us = per_call_us(partial(predictor.predict, CONDITIONS), args.runs)
        for strategy in Strategy:
            objective = Objective(strategy, 0.5, "rent", deadline_ms=500, max_cost_usd=1e-5)
            planner = Planner(args.model, layers, predictor, objective)
            us = per_call_us(partial(planner.plan, CONDITIONS), args.runs)
            print(f"| {name} | {strategy} | {us:.1f} | {us / predict_us:.1f}x |")
    every_model(args.runs, args.models.split(","))


def every_model(runs: int, models: list[str]) -> None:
    print("\nEvery model, profile predictor, rank w=0.5, rented edge\n")
    print("| model | candidates | us per plan, idle cloud | us per plan, busy cloud "
          "| busy / idle |")
    print("|---|---|---|---|---|")
    for model in models:
        profile = load_or_profile(model)
        planner = Planner(model, [layer.name for layer in profile.layers],
                          ProfilePredictor().fit(profile), Objective("rank", 0.5, "rent"))
        idle = per_call_us(partial(planner.plan, CONDITIONS), runs)
        busy = per_call_us(partial(planner.plan, BUSY), runs)
        print(f"| {model} | {profile.n_layers + 1} | {idle:.1f} | {busy:.1f} | "
              f"{busy / idle:.2f}x |")


if __name__ == "__main__":
    main()
