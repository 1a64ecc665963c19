"""The thesis's experimental conditions (section 6.7), drawn from a seed. Pure.

A pool of bandwidths from a Poisson distribution with mean 7.2 (in Mbit/s, so the pool holds
whole Mbit/s values; a 0 is raised to 1 Mbit/s because a link needs some rate), a pool of clock
speeds from a normal distribution with mean 1.5 GHz and standard deviation 0.3 GHz clipped to the
Raspberry Pi's 0.6 to 1.5 GHz (so about half the pool sits at 1.5 GHz, the thesis's "CPU at full
clock by default"), then settings: bandwidths drawn from their pool without replacement, each
paired with a clock drawn from its pool.

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


def draw_settings(seed: int, pools: Pools, count: int) -> list[Setting]:
    """``count`` settings: distinct bandwidths of the pool, each with a clock of the pool."""
    if not 1 <= count <= len(pools.bandwidths_kbps):
        raise InvalidArgument(f"settings must be between 1 and the pool size "
                              f"{len(pools.bandwidths_kbps)}, got {count}")
    rng = np.random.default_rng([seed, 1])
    bandwidth_at = rng.choice(len(pools.bandwidths_kbps), size=count, replace=False)
    clock_at = rng.choice(len(pools.clocks_ghz), size=count, replace=True)
    return [Setting(i, pools.bandwidths_kbps[b], pools.clocks_ghz[c])
            for i, (b, c) in enumerate(zip(bandwidth_at, clock_at, strict=True))]
