"""The cost model: per-second billing of edge and cloud time from hourly prices (pure).

Thesis equation 4.4 as its evaluation applies it: an owned edge costs nothing to run, so a split
costs the cloud's time; a rented edge costs its own time too. Beyond the thesis, and off by default
so that its numbers reproduce: data transfer per GB, and the energy an owned edge draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import StrEnum

from edgesplit.errors import InvalidArgument

SECONDS_PER_HOUR = 3600.0


class EdgeMode(StrEnum):
    OWN = "own"
    RENT = "rent"


def edge_mode(value: str) -> EdgeMode:
    try:
        return EdgeMode(value)
    except ValueError:
        raise InvalidArgument(f"unknown edge mode {value!r}: expected 'own' or 'rent'") from None


@dataclass(frozen=True, slots=True)
class Prices:
    """Prices in US dollars. Defaults: the thesis's Table 4.1 (AWS t3.xlarge, 2023)."""

    edge_usd_per_hour: float = 0.224  # Wavelength zone, rented edge
    cloud_usd_per_hour: float = 0.1664  # region
    transfer_usd_per_gb: float = 0.0  # uplink data, per 10^9 bytes offloaded
    edge_power_w: float = 0.0  # an owned edge's draw while computing
    energy_usd_per_kwh: float = 0.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"price {field.name} must be 0 or more, got {value!r}")


def rates(mode: EdgeMode, prices: Prices = Prices()) -> tuple[float, float, float]:
    """Dollars per edge second, per cloud second and per offloaded byte."""
    if mode is EdgeMode.RENT:
        per_edge_s = prices.edge_usd_per_hour / SECONDS_PER_HOUR
    else:  # owned: only the energy it draws, if a price for that is given
        per_edge_s = prices.edge_power_w / 3.6e6 * prices.energy_usd_per_kwh
    per_cloud_s = prices.cloud_usd_per_hour / SECONDS_PER_HOUR
    return per_edge_s, per_cloud_s, prices.transfer_usd_per_gb * 1e-9


def cost_usd(edge_s: float, cloud_s: float, offload_bytes: int, mode: EdgeMode,
             prices: Prices = Prices()) -> float:
    """What one inference costs when the edge computes ``edge_s`` and the cloud ``cloud_s``."""
    per_edge_s, per_cloud_s, per_byte = rates(mode, prices)
    return edge_s * per_edge_s + cloud_s * per_cloud_s + offload_bytes * per_byte


def cost_vector(edge_s: tuple[float, ...], cloud_s: tuple[float, ...],
                offload_bytes: tuple[int, ...], mode: EdgeMode,
                prices: Prices = Prices()) -> tuple[float, ...]:
    """``cost_usd`` for every split point at once (the planner's hot path)."""
    per_edge_s, per_cloud_s, per_byte = rates(mode, prices)
    return tuple(e * per_edge_s + c * per_cloud_s + b * per_byte
                 for e, c, b in zip(edge_s, cloud_s, offload_bytes, strict=True))
