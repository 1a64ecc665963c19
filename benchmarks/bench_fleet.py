"""Fleet simulation: 100, 1,000 and 10,000 edges sharing one cloud tier, per strategy.

    python benchmarks/bench_fleet.py [--edges 100,1000,10000] [--edges-per-replica 250]
        [--duration 60] [--interval 5] [--edge-slowdown 5]

A discrete-event simulation (``edgesplit.evaluation.fleet``) with the real planner and this
machine's measured AlexNet profile: the cloud's tails take the measured per-layer times, the
edges' layers the same times ``--edge-slowdown`` times slower (a Raspberry Pi class core; an
assumption, stated here) scaled to each edge's clock. Each edge follows its own trace of
bandwidth (0.5 to 50 Mbit/s), RTT (5 to 80 ms) and clock (0.6 to 1.5 GHz), changing every 10 s,
and starts an inference every ``--interval`` seconds on average; the cloud has one replica per
``--edges-per-replica`` edges, first come, first served. Every strategy runs load-blind (the
thesis's idle cloud) and load-aware (the wait the cloud reported in the edge's last answer).
Prints latency and cost per inference per strategy, then how planning time and the
simulation's memory grow with the number of edges.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from edgesplit.core.planning import Objective, Planner
from edgesplit.core.predictors import Conditions, ProfilePredictor
from edgesplit.core.profiles import Profile
from edgesplit.evaluation.fleet import FleetConfig, FleetResult, FleetSimulation
from edgesplit.measuring.profiler import load_or_profile

STRATEGIES = (("latency", 0.0), ("rank", 0.5), ("weighted", 0.5))


def slower(profile: Profile, factor: float) -> Profile:
    """The profile of an edge whose cores are ``factor`` times slower than this machine's."""
    layers = [layer.model_copy(update={"time_s": layer.time_s * factor})
              for layer in profile.layers]
    return profile.model_copy(update={"layers": layers, "forward_s": profile.forward_s * factor})


def simulate(config: FleetConfig, predictor: ProfilePredictor, layers: list[str],
             strategy: str, weight: float, aware: bool) -> FleetResult:
    planner = Planner("alexnet", layers, predictor, Objective(strategy, weight, "rent"))
    tail_s = predictor.predict(Conditions(1000, 1, 1.0)).cloud_s
    return FleetSimulation(config, planner, predictor, tail_s, load_aware=aware).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", default="100,1000,10000")
    parser.add_argument("--edges-per-replica", type=int, default=250)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--edge-slowdown", type=float, default=5.0)
    args = parser.parse_args()
    cloud = load_or_profile("alexnet")
    predictor = ProfilePredictor().fit(slower(cloud, args.edge_slowdown), cloud)
    layers = [layer.name for layer in cloud.layers]
    sizes = [int(n) for n in args.edges.split(",")]
    print(f"AlexNet, {args.duration:g} simulated seconds, an inference every {args.interval:g} s "
          f"per edge, one replica per {args.edges_per_replica} edges, edges "
          f"{args.edge_slowdown:g}x slower per clock than this machine; rented edge prices\n")
    print("| edges | replicas | strategy | planning | inferences | p50 ms | p99 ms | mean ms "
          "| µ$ per inference | mean split | all on the edge |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    scaling = []
    for edges in sizes:
        config = FleetConfig(edges=edges, replicas=max(1, edges // args.edges_per_replica),
                             duration_s=args.duration, interval_s=args.interval)
        for strategy, weight in STRATEGIES:
            for aware in (False, True):
                began = time.perf_counter()
                r = simulate(config, predictor, layers, strategy, weight, aware)
                wall = time.perf_counter() - began
                s = r.summary()
                print(f"| {edges} | {config.replicas} | {strategy} w={weight:g} | "
                      f"{'load-aware' if aware else 'load-blind'} | {s['inferences']:.0f} | "
                      f"{s['p50_ms']:.0f} | {s['p99_ms']:.0f} | {s['mean_ms']:.0f} | "
                      f"{s['cost_uusd']:.2f} | {s['mean_split']:.1f} | "
                      f"{s['edge_only_pct']:.0f}% |")
                if strategy == "rank" and aware:
                    scaling.append((edges, r, wall))
    print("\n| edges | plans | µs per plan | planning s | simulation s | peak traced MB "
          "| KB per edge |")
    print("|---|---|---|---|---|---|---|")
    for edges, r, wall in scaling:
        config = FleetConfig(edges=edges, replicas=max(1, edges // args.edges_per_replica),
                             duration_s=args.duration, interval_s=args.interval)
        tracemalloc.start()
        simulate(config, predictor, layers, "rank", 0.5, True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"| {edges} | {r.plans} | {r.planning_s / r.plans * 1e6:.1f} | "
              f"{r.planning_s:.2f} | {wall:.1f} | {peak / 1e6:.1f} | {peak / edges / 1e3:.1f} |")


if __name__ == "__main__":
    main()
