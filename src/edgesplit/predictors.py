"""Latency predictors: per split point, how long the edge, the uplink and the cloud will take.

Both follow one estimator interface: ``Predictor(...).fit(edge, cloud, peers)`` learns from
profiles and returns the predictor; ``predict(conditions)`` returns a ``Prediction`` with one
value per split point ``0..N``. Pure code: numbers and records in, records out; fitting uses scipy,
prediction is plain arithmetic so that planning stays in microseconds.

- ``ThesisPredictor`` is the thesis's model (chapter 4), reproduced for comparison.
- ``ProfilePredictor`` (the default) uses the measured per-layer times instead of a straight line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

from .errors import CalibrationError, InvalidArgument, InvalidConditions, NotFitted
from .fitting import (
    DEFAULT_CLOCK_EXPONENT,
    PowerLaw,
    denormalise,
    fit_power_law,
    min_max_normalise,
)
from .profiles import Profile

WIRE_FACTOR = 1.045
"""Bytes on the wire per payload byte: TCP/IP and Ethernet headers (measured, DESIGN.md s. 5)."""

REQUEST_OVERHEAD_BYTES = 400
"""HTTP request line and headers plus the inference header of one offload, before learning."""


@dataclass(frozen=True, slots=True)
class Conditions:
    """Live conditions: uplink bandwidth (kbit/s), round-trip time (ms), edge clock (GHz)."""

    bandwidth_kbps: float
    rtt_ms: float
    clock_ghz: float

    def __post_init__(self) -> None:
        for name, value, low in (("bandwidth_kbps", self.bandwidth_kbps, 0.0),
                                 ("rtt_ms", self.rtt_ms, None),
                                 ("clock_ghz", self.clock_ghz, 0.0)):
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidConditions(f"{name} must be a finite number, got {value!r}")
            if low is not None and value <= low:
                raise InvalidConditions(f"{name} must be more than {low:g}, got {value:g}")
            if low is None and value < 0:
                raise InvalidConditions(f"{name} must be 0 or more, got {value:g}")


@dataclass(frozen=True, slots=True)
class Prediction:
    """Predicted seconds per split point 0..N, and the bytes each split point sends."""

    edge_s: tuple[float, ...]
    comm_s: tuple[float, ...]
    cloud_s: tuple[float, ...]
    offload_bytes: tuple[int, ...]

    @property
    def latency_s(self) -> tuple[float, ...]:
        return tuple(e + c + k for e, c, k in zip(self.edge_s, self.comm_s, self.cloud_s,
                                                  strict=True))


class Predictor(Protocol):
    def fit(self, edge: Profile, cloud: Profile | None = None,
            peers: Sequence[Profile] = ()) -> Predictor: ...

    def predict(self, conditions: Conditions) -> Prediction: ...


def thesis_comm_s(offload_bytes: int, bandwidth_kbps: float, rtt_ms: float) -> float:
    """Thesis equation 4.3: ``OS * 8 / (1000 * BW) + PL / 2000`` (bytes, kbit/s, ms)."""
    return offload_bytes * 8 / (1000 * bandwidth_kbps) + rtt_ms / 2000


class ThesisPredictor:
    """The thesis's model (DESIGN.md section 3).

    Edge latency is linear in the split point, ``slope(CS) * sp``. The slope comes from a power law
    ``a * CS ** b`` fitted on the min-max normalised slopes of every calibrated network (``edge``
    and ``peers``), de-normalised with this network's slopes at its lowest and highest calibrated
    clocks (equations 4.1, 4.2). The cloud is linear from one all-in-cloud time; communication is
    equation 4.3 on the raw float32 sizes.
    """

    def fit(self, edge: Profile, cloud: Profile | None = None,
            peers: Sequence[Profile] = ()) -> ThesisPredictor:
        n = edge.n_layers
        own = _calibration(edge)
        if len(own) < 2:
            raise CalibrationError(
                f"the thesis predictor needs {edge.model} measured at two or more clock speeds; "
                f"run `edgesplit profile {edge.model} --clocks 0.6,0.9,1.2,1.5`"
            )
        clocks: list[float] = []
        normalised: list[float] = []
        networks = {p.model: p for p in (*peers, edge)}  # the edge's own profile wins
        for profile in networks.values():
            points = _calibration(profile)
            if len(points) < 2:
                continue
            slopes = [latency / profile.n_layers for _, latency in points]
            clocks += [clock for clock, _ in points]
            normalised += min_max_normalise(slopes)
        self.law_ = fit_power_law(clocks, normalised)
        self.slope_high_ = own[0][1] / n  # slope at the lowest clock: the upper bound
        self.slope_low_ = own[-1][1] / n  # slope at the highest clock: the lower bound
        all_in_cloud_s = (cloud or edge).forward_s
        self.cloud_s_ = tuple(all_in_cloud_s * (n - sp) / n for sp in range(n + 1))
        self.offload_bytes_ = tuple(edge.offload_bytes)
        self.points_ = list(zip(clocks, normalised, strict=True))
        return self

    def edge_slope_s(self, clock_ghz: float) -> float:
        """Seconds per layer on the edge at ``clock_ghz`` (equations 4.1 and 4.2)."""
        _fitted(self, "law_")
        return denormalise(self.law_(clock_ghz), self.slope_low_, self.slope_high_)

    def predict(self, conditions: Conditions) -> Prediction:
        slope = self.edge_slope_s(conditions.clock_ghz)
        bw, rtt = conditions.bandwidth_kbps, conditions.rtt_ms
        return Prediction(
            edge_s=tuple(slope * sp for sp in range(len(self.cloud_s_))),
            comm_s=tuple(thesis_comm_s(size, bw, rtt) for size in self.offload_bytes_),
            cloud_s=self.cloud_s_,
            offload_bytes=self.offload_bytes_,
        )


class ProfilePredictor:
    """Cumulative measured per-layer times, scaled by a clock law fitted on calibration pairs.

    - Edge: ``sum(t_i for i <= sp) * law(clock) / law(profile clock)``; the law is a power law
      fitted to the profile's (clock, whole-forward latency) pairs plus its full-speed forward.
      With no calibration the exponent is ``-1`` (time inversely proportional to clock speed).
    - Cloud: ``sum(t_i for i > sp)`` from the cloud's profile (the edge's own when none is given).
    - Communication: the encoded payload plus request overhead, times the wire factor, over the
      bandwidth, plus one round trip (the request goes out, the answer comes back).

    ``payload_ratio`` (per split point, or one number) is the encoded size over the raw size, as a
    codec produces it; ``overhead_s`` is extra per-request time learned from measurements.
    """

    def __init__(self, *, wire_factor: float = WIRE_FACTOR,
                 request_overhead_bytes: int = REQUEST_OVERHEAD_BYTES,
                 payload_ratio: float | Sequence[float] = 1.0,
                 overhead_s: float = 0.0) -> None:
        if wire_factor < 1 or request_overhead_bytes < 0 or overhead_s < 0:
            raise InvalidArgument(
                "wire_factor must be at least 1, overheads 0 or more"
            )
        self.wire_factor = wire_factor
        self.request_overhead_bytes = request_overhead_bytes
        self.payload_ratio = payload_ratio
        self.overhead_s = overhead_s

    def fit(self, edge: Profile, cloud: Profile | None = None,
            peers: Sequence[Profile] = ()) -> ProfilePredictor:
        cloud = cloud or edge
        if cloud.n_layers != edge.n_layers:
            raise InvalidArgument(
                f"the cloud profile has {cloud.n_layers} layers and the edge's "
                f"{edge.n_layers}: they must profile the same model"
            )
        points = _calibration(edge)
        if points:
            pairs = [*points, (edge.machine.clock_ghz, edge.forward_s)]
            self.law_ = fit_power_law([c for c, _ in pairs], [t for _, t in pairs])
        else:
            self.law_ = PowerLaw(edge.forward_s * edge.machine.clock_ghz**-DEFAULT_CLOCK_EXPONENT,
                                 DEFAULT_CLOCK_EXPONENT)
        self.reference_clock_ghz_ = edge.machine.clock_ghz
        self.edge_cumulative_s_ = (0.0, *accumulate(edge.layer_times_s))
        cloud_times = cloud.layer_times_s
        self.cloud_s_ = tuple(sum(cloud_times[sp:]) for sp in range(cloud.n_layers + 1))
        self.offload_bytes_ = tuple(edge.offload_bytes)
        ratios = self.payload_ratio
        if isinstance(ratios, int | float):
            ratios = [float(ratios)] * len(self.offload_bytes_)
        if len(ratios) != len(self.offload_bytes_):
            raise InvalidArgument(
                f"payload_ratio has {len(ratios)} values for {len(self.offload_bytes_)} "
                "split points"
            )
        self.wire_bits_ = tuple(
            (size * ratio + self.request_overhead_bytes) * self.wire_factor * 8
            for size, ratio in zip(self.offload_bytes_, ratios, strict=True)
        )
        return self

    def edge_scale(self, clock_ghz: float) -> float:
        """How much slower the edge is at ``clock_ghz`` than when it was profiled."""
        _fitted(self, "law_")
        return self.law_.ratio(clock_ghz, self.reference_clock_ghz_)

    def predict(self, conditions: Conditions) -> Prediction:
        scale = self.edge_scale(conditions.clock_ghz)
        per_bit = 1 / (1000 * conditions.bandwidth_kbps)
        fixed = conditions.rtt_ms / 1000 + self.overhead_s
        return Prediction(
            edge_s=tuple(t * scale for t in self.edge_cumulative_s_),
            comm_s=tuple(bits * per_bit + fixed for bits in self.wire_bits_),
            cloud_s=self.cloud_s_,
            offload_bytes=self.offload_bytes_,
        )


PREDICTORS: dict[str, type[ThesisPredictor] | type[ProfilePredictor]] = {
    "profile": ProfilePredictor,
    "thesis": ThesisPredictor,
}


def make_predictor(name: str) -> Predictor:
    try:
        return PREDICTORS[name]()
    except KeyError:
        raise InvalidArgument(
            f"unknown predictor {name!r}: expected one of {', '.join(PREDICTORS)}"
        ) from None


def _calibration(profile: Profile) -> list[tuple[float, float]]:
    """(clock, latency) pairs sorted by clock, one per clock (the median of duplicates)."""
    by_clock: dict[float, list[float]] = {}
    for point in profile.calibration:
        by_clock.setdefault(point.clock_ghz, []).append(point.latency_s)
    return [(clock, sorted(values)[len(values) // 2]) for clock, values in sorted(by_clock.items())]


def _fitted(predictor: object, attribute: str) -> None:
    if not hasattr(predictor, attribute):
        raise NotFitted(f"{type(predictor).__name__} is not fitted yet: call fit(...) first")
