"""The thesis's experimental conditions (section 6.7), drawn from a seed. Pure.

A pool of bandwidths from a Poisson distribution with mean 7.2 (in Mbit/s, so the pool holds
whole Mbit/s values; a 0 is raised to 1 Mbit/s because a link needs some rate), a pool of clock
speeds from a normal distribution with mean 1.5 GHz and standard deviation 0.3 GHz clipped to the
Raspberry Pi's 0.6 to 1.5 GHz (so about half the pool sits at 1.5 GHz, the thesis's "CPU at full
clock by default"), then settings: bandwidths drawn from their pool without replacement, each
paired with a clock drawn from its pool; every setting at the thesis's one round trip (20 ms,
no jitter).

The wide suite (``draw_wide``) leaves the pools: bandwidth log-uniform over 0.5 to 100 Mbit/s,
round trip log-uniform over 5 to 200 ms with a jitter of up to a quarter of it, and the edge's
speed log-uniform over 0.1 to 1.0 of a core (the clock ``1.5 x speed`` GHz, where 1.5 GHz is a
full core), each drawn as a Latin hypercube: every dimension's range is cut into as many equal
strata (on the log scale) as there are settings and each stratum holds exactly one setting, so
even a few settings reach both ends of every range and a model's best split moves from all-cloud
(fast link, slow edge) to all-edge (slow link, fast edge).

>>> pools = draw_pools(0)
>>> len(pools.bandwidths_kbps), len(pools.clocks_ghz)
(30, 30)
>>> [s.index for s in draw_settings(0, pools, 3)]
[0, 1, 2]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgesplit.errors import InvalidArgument

BANDWIDTH_MEAN_MBPS = 7.2
CLOCK_MEAN_GHZ = 1.5
CLOCK_SD_GHZ = 0.3
CLOCK_RANGE_GHZ = (0.6, 1.5)
POOL_SIZE = 30
THESIS_RTT_MS = 20.0
WIDE_BANDWIDTH_KBPS = (500.0, 100_000.0)
WIDE_RTT_MS = (5.0, 200.0)
WIDE_JITTER_OF_RTT = 0.25
WIDE_EDGE_SPEED = (0.1, 1.0)
FULL_CORE_GHZ = 1.5


@dataclass(frozen=True)
class Pools:
    bandwidths_kbps: tuple[float, ...]
    clocks_ghz: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bandwidths_kbps": list(self.bandwidths_kbps),
            "clocks_ghz": list(self.clocks_ghz),
            "bandwidth": f"Poisson, mean {BANDWIDTH_MEAN_MBPS} Mbit/s, whole Mbit/s, at least 1",
            "clock": f"normal, mean {CLOCK_MEAN_GHZ} GHz, sd {CLOCK_SD_GHZ} GHz, clipped to "
                     f"{CLOCK_RANGE_GHZ[0]}..{CLOCK_RANGE_GHZ[1]} GHz, rounded to 0.01 GHz",
        }


@dataclass(frozen=True)
class Setting:
    index: int
    bandwidth_kbps: float
    clock_ghz: float
    rtt_ms: float = THESIS_RTT_MS
    jitter_ms: float = 0.0
    edge_speed: float | None = None
    """The wide suite's share of a core (``clock_ghz / 1.5``); None in the thesis suite, whose
    edge speed is the experiment's ``--edge-speed`` for every setting."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def draw_pools(seed: int, size: int = POOL_SIZE) -> Pools:
    if size < 1:
        raise InvalidArgument(f"pool size must be at least 1, got {size}")
    rng = np.random.default_rng(seed)
    bandwidths = np.maximum(rng.poisson(BANDWIDTH_MEAN_MBPS, size), 1) * 1000.0
    clocks = np.clip(rng.normal(CLOCK_MEAN_GHZ, CLOCK_SD_GHZ, size), *CLOCK_RANGE_GHZ)
    return Pools(tuple(float(b) for b in bandwidths),
                 tuple(round(float(c), 2) for c in clocks))


def draw_settings(seed: int, pools: Pools, count: int,
                  rtt_ms: float = THESIS_RTT_MS) -> list[Setting]:
    """``count`` settings: distinct bandwidths of the pool, each with a clock of the pool."""
    if not 1 <= count <= len(pools.bandwidths_kbps):
        raise InvalidArgument(f"settings must be between 1 and the pool size "
                              f"{len(pools.bandwidths_kbps)}, got {count}")
    rng = np.random.default_rng([seed, 1])
    bandwidth_at = rng.choice(len(pools.bandwidths_kbps), size=count, replace=False)
    clock_at = rng.choice(len(pools.clocks_ghz), size=count, replace=True)
    return [Setting(i, pools.bandwidths_kbps[b], pools.clocks_ghz[c], rtt_ms)
            for i, (b, c) in enumerate(zip(bandwidth_at, clock_at, strict=True))]


def draw_wide(seed: int, count: int) -> list[Setting]:
    """The wide suite's ``count`` settings (a Latin hypercube on log scales; see above).

    >>> [(s.bandwidth_kbps, s.rtt_ms, s.jitter_ms, s.clock_ghz) for s in draw_wide(0, 2)]
    ... # doctest: +NORMALIZE_WHITESPACE
    [(4885.0, 56.7, 0.9, 0.22), (16567.0, 8.7, 0.4, 1.09)]
    """
    if count < 1:
        raise InvalidArgument(f"settings must be at least 1, got {count}")
    rng = np.random.default_rng([seed, 3])

    def stratified(low: float, high: float) -> list[float]:
        # One draw in each of ``count`` equal strata of [log low, log high], in a random order.
        unit = (rng.permutation(count) + rng.random(count)) / count
        return [float(v) for v in np.exp(np.log(low) + unit * (np.log(high) - np.log(low)))]

    bandwidths = stratified(*WIDE_BANDWIDTH_KBPS)
    rtts = stratified(*WIDE_RTT_MS)
    speeds = stratified(*WIDE_EDGE_SPEED)
    jitters = rng.random(count) * WIDE_JITTER_OF_RTT
    clocks = [round(s * FULL_CORE_GHZ, 2) for s in speeds]
    return [Setting(i, float(round(b)), c, round(r, 1), round(float(j) * r, 1),
                    round(c / FULL_CORE_GHZ, 4))
            for i, (b, r, c, j) in enumerate(zip(bandwidths, rtts, clocks, jitters,
                                                 strict=True))]
