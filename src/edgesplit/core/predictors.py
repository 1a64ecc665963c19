"""Latency predictors: per split point, how long the edge, the uplink and the cloud will take.

Both follow one estimator interface: ``Predictor(...).fit(edge, cloud, peers, law)`` learns from
profiles (``law`` fits the clock-speed power laws: scipy by default, remembered on disk by
``edgesplit.core.fitted.fit_predictor``, the one place that fits a predictor for a model) and
returns the predictor; ``predict(conditions)`` returns a ``Prediction`` with one
value per split point ``0..N``. Pure code: numbers and records in, records out; fitting uses scipy,
prediction is plain arithmetic so that planning stays in microseconds.

- ``ThesisPredictor`` is the thesis's model (chapter 4), reproduced for comparison.
- ``ProfilePredictor`` (the default) uses the measured per-layer times instead of a straight line.
- ``NeurosurgeonPredictor`` predicts a model never timed: per-layer-type regressions fitted on
  other models' profiles.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import TYPE_CHECKING, Protocol

from edgesplit.core.fitting import (
    DEFAULT_CLOCK_EXPONENT,
    LawFitter,
    PowerLaw,
    denormalise,
    fit_power_law,
    min_max_normalise,
)
from edgesplit.core.load import with_wait
from edgesplit.errors import CalibrationError, InvalidArgument, InvalidConditions, NotFitted

if TYPE_CHECKING:
    from edgesplit.core.profiles import Profile, SplitPointProfile

WIRE_FACTOR = 1.045
"""Bytes on the wire per payload byte: TCP/IP and Ethernet headers (docs/design.md section 5)."""

REQUEST_OVERHEAD_BYTES = 400
"""HTTP request line and headers plus the inference header of one offload, before learning."""

CORRECTION_WINDOW = 128
"""How many recent whole latencies at a split point its learned correction is the median of:
enough that a throttling spike moves it little, few enough that it follows a changed cloud."""


@dataclass(frozen=True, slots=True)
class Conditions:
    """Live conditions: uplink bandwidth (kbit/s), round-trip time (ms), edge clock (GHz), and
    how long a request will wait at a busy cloud before its tail runs (s; ``core.load``)."""

    bandwidth_kbps: float
    rtt_ms: float
    clock_ghz: float
    cloud_wait_s: float = 0.0

    def __post_init__(self) -> None:
        for name, value, low in (("bandwidth_kbps", self.bandwidth_kbps, 0.0),
                                 ("rtt_ms", self.rtt_ms, None),
                                 ("clock_ghz", self.clock_ghz, 0.0),
                                 ("cloud_wait_s", self.cloud_wait_s, None)):
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
    offload_bytes: tuple[int, ...]  # as sent, after the codec
    codec: tuple[str, ...]  # the codec each split point's prediction assumes

    @property
    def latency_s(self) -> tuple[float, ...]:
        return tuple(e + c + k for e, c, k in zip(self.edge_s, self.comm_s, self.cloud_s,
                                                  strict=True))


class Predictor(Protocol):
    """What the planner and the edge runtime need of a predictor.

    ``partial_fit`` learns from one inference: the clock it ran at, the edge's per-layer times
    and the cloud's (``{layer index (1-based): seconds}``), and what the codec at the split
    point really produced (bytes) and cost (seconds). ``observe`` learns from one whole
    latency measured at a split point under ``conditions`` (what no per-part time shows: the
    fixed costs of a request). A predictor uses what its model can and ignores the rest.
    """

    name: str

    def fit(self, edge: Profile, cloud: Profile | None = None,
            peers: Sequence[Profile] = (), law: LawFitter = fit_power_law) -> Predictor: ...

    def partial_fit(self, *, clock_ghz: float, edge_layer_s: Mapping[int, float] | None = None,
                    cloud_layer_s: Mapping[int, float] | None = None, codec: str | None = None,
                    split_point: int | None = None, encoded_bytes: int | None = None,
                    codec_s: float | None = None) -> Predictor: ...

    def observe(self, conditions: Conditions, split_point: int, latency_s: float,
                codec: str = "raw") -> Predictor: ...

    def predict(self, conditions: Conditions, codec: str = "raw") -> Prediction: ...


def thesis_comm_s(offload_bytes: int, bandwidth_kbps: float, rtt_ms: float) -> float:
    """Thesis equation 4.3: ``OS * 8 / (1000 * BW) + PL / 2000`` (bytes, kbit/s, ms)."""
    return offload_bytes * 8 / (1000 * bandwidth_kbps) + rtt_ms / 2000


class ThesisPredictor:
    """The thesis's model (docs/design.md section 3).

    Edge latency is linear in the split point, ``slope(CS) * sp``. The slope comes from a power law
    ``a * CS ** b`` fitted on the min-max normalised slopes of every calibrated network (``edge``
    and ``peers``), de-normalised with this network's slopes at its lowest and highest calibrated
    clocks (equations 4.1, 4.2). The cloud is linear from one all-in-cloud time; communication is
    equation 4.3 on the raw float32 sizes. It learns nothing online (the thesis fits once):
    ``partial_fit`` accepts measurements and leaves the model as fitted.
    """

    name = "thesis"

    def fit(self, edge: Profile, cloud: Profile | None = None,
            peers: Sequence[Profile] = (), law: LawFitter = fit_power_law) -> ThesisPredictor:
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
        self.law_ = law(clocks, normalised)
        self.slope_high_ = own[0][1] / n  # slope at the lowest clock: the upper bound
        self.slope_low_ = own[-1][1] / n  # slope at the highest clock: the lower bound
        all_in_cloud_s = (cloud or edge).forward_s
        self.cloud_s_ = tuple(all_in_cloud_s * (n - sp) / n for sp in range(n + 1))
        self.offload_bytes_ = tuple(edge.offload_bytes)
        self.points_ = list(zip(clocks, normalised, strict=True))
        return self

    def partial_fit(self, *, clock_ghz: float, edge_layer_s: Mapping[int, float] | None = None,
                    cloud_layer_s: Mapping[int, float] | None = None, codec: str | None = None,
                    split_point: int | None = None, encoded_bytes: int | None = None,
                    codec_s: float | None = None) -> ThesisPredictor:
        """Nothing to learn: chapter 4's model is a fit on profiles only."""
        return self

    def observe(self, conditions: Conditions, split_point: int, latency_s: float,
                codec: str = "raw") -> ThesisPredictor:
        """Nothing to learn (as ``partial_fit``)."""
        return self

    def edge_slope_s(self, clock_ghz: float) -> float:
        """Seconds per layer on the edge at ``clock_ghz`` (equations 4.1 and 4.2)."""
        _fitted(self, "law_")
        return denormalise(self.law_(clock_ghz), self.slope_low_, self.slope_high_)

    def predict(self, conditions: Conditions, codec: str = "raw") -> Prediction:
        if codec != "raw":
            raise InvalidArgument(
                "the thesis predictor models raw float32 tensors only; use --predictor profile "
                "for other codecs"
            )
        slope = self.edge_slope_s(conditions.clock_ghz)
        bw, rtt = conditions.bandwidth_kbps, conditions.rtt_ms
        return Prediction(
            edge_s=tuple(slope * sp for sp in range(len(self.cloud_s_))),
            comm_s=tuple(thesis_comm_s(size, bw, rtt) for size in self.offload_bytes_),
            cloud_s=with_wait(self.cloud_s_, conditions.cloud_wait_s),
            offload_bytes=self.offload_bytes_,
            codec=("raw",) * len(self.cloud_s_),
        )


class ProfilePredictor:
    """Cumulative measured per-layer times, scaled by a clock law, learned online.

    - Edge: ``sum(t_i for i <= sp) * law(clock) / law(profile clock)``; the law is a power law
      fitted to the profile's (clock, whole-forward latency) pairs plus its full-speed forward.
      With no calibration the exponent is ``-1`` (time inversely proportional to clock speed).
    - Cloud: ``sum(t_i for i > sp)`` from the cloud's profile (the edge's own when none is given),
      plus the wait at a busy cloud (``conditions.cloud_wait_s``) wherever a tail is left.
    - Communication: the encoded payload plus request overhead, times the wire factor, over the
      bandwidth, plus one round trip (the request goes out, the answer comes back).
    - Codecs: a codec shrinks the payload by a ratio and costs the edge its encoding time; both
      start from priors and are learned from what was actually sent (decoding is part of the
      cloud's time, which the cloud reports). Encoding is edge work: like the layers' times it
      is kept at the profile's clock and scaled by the law.

    ``partial_fit`` folds measurements in (exponentially weighted, ``learning_rate``): the edge's
    own per-layer times (brought back to the profile's clock by the law), the per-layer times the
    cloud returns, and the bytes and seconds each codec really took.

    ``observe`` learns what the per-part model misses, rather than assuming it: at each split
    point, the median of the last ``CORRECTION_WINDOW`` whole latencies' excess over the model
    (the fixed costs of a request, the network stack's and the cloud's, which no profile times,
    and how far the throttled edge is from the clock law there); a split point never measured
    takes the median over all that were. It is added to ``comm_s`` (which stays 0 or more).
    """

    name = "profile"

    def __init__(self, *, wire_factor: float = WIRE_FACTOR,
                 request_overhead_bytes: int = REQUEST_OVERHEAD_BYTES,
                 learning_rate: float = 0.2) -> None:
        if wire_factor < 1 or request_overhead_bytes < 0 or not 0 < learning_rate <= 1:
            raise InvalidArgument(
                "wire_factor must be at least 1, request_overhead_bytes 0 or more and "
                "learning_rate in (0, 1]"
            )
        self.wire_factor = wire_factor
        self.request_overhead_bytes = request_overhead_bytes
        self.learning_rate = learning_rate

    def fit(self, edge: Profile, cloud: Profile | None = None,
            peers: Sequence[Profile] = (), law: LawFitter = fit_power_law) -> ProfilePredictor:
        cloud = cloud or edge
        if cloud.n_layers != edge.n_layers:
            raise InvalidArgument(
                f"the cloud profile has {cloud.n_layers} layers and the edge's "
                f"{edge.n_layers}: they must profile the same model"
            )
        self.law_ = clock_law(tuple(_calibration(edge)), edge.machine.clock_ghz, edge.forward_s,
                              law)
        self.reference_clock_ghz_ = edge.machine.clock_ghz
        self.edge_layer_s_ = list(edge.layer_times_s)
        self.cloud_layer_s_ = list(cloud.layer_times_s)
        self.offload_bytes_ = tuple(edge.offload_bytes)
        self._start_learning()
        return self

    def _start_learning(self) -> None:
        self.ratio_: dict[str, list[float]] = {}
        self.codec_s_: dict[str, list[float]] = {}
        self.excess_s_: dict[int, deque[float]] = {}
        self.correction_s_ = (0.0,) * len(self.offload_bytes_)
        self._refresh()

    def observe(self, conditions: Conditions, split_point: int, latency_s: float,
                codec: str = "raw") -> ProfilePredictor:
        """Learn the correction at ``split_point`` from one whole latency measured there."""
        model = self._predict(conditions, codec, (0.0,) * len(self.offload_bytes_))
        window = self.excess_s_.setdefault(split_point, deque(maxlen=CORRECTION_WINDOW))
        window.append(latency_s - model.latency_s[split_point])
        pooled = statistics.median(e for excesses in self.excess_s_.values() for e in excesses)
        self.correction_s_ = tuple(
            statistics.median(self.excess_s_[sp]) if sp in self.excess_s_ else pooled
            for sp in range(len(self.offload_bytes_)))
        return self

    def partial_fit(self, *, clock_ghz: float, edge_layer_s: Mapping[int, float] | None = None,
                    cloud_layer_s: Mapping[int, float] | None = None, codec: str | None = None,
                    split_point: int | None = None, encoded_bytes: int | None = None,
                    codec_s: float | None = None) -> ProfilePredictor:
        """Learn from one inference. Layer maps are ``{layer index (1-based): seconds}``."""
        rate = self.learning_rate
        scale = self.edge_scale(clock_ghz)
        for index, seconds in (edge_layer_s or {}).items():
            old = self.edge_layer_s_[index - 1]
            self.edge_layer_s_[index - 1] = old + rate * (seconds / scale - old)
        for index, seconds in (cloud_layer_s or {}).items():
            old = self.cloud_layer_s_[index - 1]
            self.cloud_layer_s_[index - 1] = old + rate * (seconds - old)
        if codec is not None and split_point is not None:
            raw = self.offload_bytes_[split_point]
            if encoded_bytes is not None and raw:
                ratios = self._codec_table(self.ratio_, codec, codec_ratio_prior(codec))
                ratios[split_point] += rate * (encoded_bytes / raw - ratios[split_point])
            if codec_s is not None:  # edge work: kept at the profile's clock, as layers are
                times = self._codec_table(self.codec_s_, codec, 0.0)
                times[split_point] += rate * (codec_s / scale - times[split_point])
        self._refresh()
        return self

    def edge_scale(self, clock_ghz: float) -> float:
        """How much slower the edge is at ``clock_ghz`` than when it was profiled."""
        _fitted(self, "law_")
        return self.law_.ratio(clock_ghz, self.reference_clock_ghz_)

    def predict(self, conditions: Conditions, codec: str = "raw") -> Prediction:
        _fitted(self, "law_")
        return self._predict(conditions, codec, self.correction_s_)

    def _predict(self, conditions: Conditions, codec: str,
                 correction_s: Sequence[float]) -> Prediction:
        scale = self.edge_scale(conditions.clock_ghz)
        per_bit = self.wire_factor * 8 / (1000 * conditions.bandwidth_kbps)
        rtt_s = conditions.rtt_ms / 1000
        overhead = self.request_overhead_bytes
        if codec == "raw" and codec not in self.ratio_:
            sent = self.offload_bytes_
            edge = tuple(t * scale for t in self.edge_cumulative_s_)
        else:
            ratios = self.ratio_.get(codec) or [codec_ratio_prior(codec)] * len(self.offload_bytes_)
            times = self.codec_s_.get(codec) or [0.0] * len(self.offload_bytes_)
            sent = tuple(round(size * r) for size, r in zip(self.offload_bytes_, ratios,
                                                              strict=True))
            edge = tuple((t + c) * scale for t, c in zip(self.edge_cumulative_s_, times,
                                                         strict=True))
        return Prediction(
            edge_s=edge,
            comm_s=tuple(max(0.0, (size + overhead) * per_bit + rtt_s + fix)
                         for size, fix in zip(sent, correction_s, strict=True)),
            cloud_s=with_wait(self.cloud_s_, conditions.cloud_wait_s),
            offload_bytes=sent,
            codec=(codec,) * len(sent),
        )

    def _refresh(self) -> None:
        self.edge_cumulative_s_ = (0.0, *accumulate(self.edge_layer_s_))
        after = [0.0, *accumulate(reversed(self.cloud_layer_s_))]
        self.cloud_s_ = tuple(reversed(after))

    def _codec_table(self, table: dict[str, list[float]], codec: str,
                     prior: float) -> list[float]:
        return table.setdefault(codec, [prior] * len(self.offload_bytes_))


def codec_ratio_prior(codec: str) -> float:
    """A codec's encoded size over the raw float32 size, before anything was sent (the codec
    registry's priors, ``edgesplit.wire.codecs``)."""
    # Imported here: the codec registry needs torch, and planning raw tensors (`edgesplit plan`)
    # must not pay seconds to import it.
    from edgesplit.wire.codecs import parse_codec

    return parse_codec(codec).size_prior


@lru_cache(maxsize=256)
def clock_law(points: tuple[tuple[float, float], ...], reference_ghz: float,
              reference_s: float, law: LawFitter = fit_power_law) -> PowerLaw:
    """The power law through calibration ``points`` and the full-speed forward (cached: every
    planner of a model on a machine fits the same points)."""
    if not points:
        return PowerLaw(reference_s * reference_ghz ** -DEFAULT_CLOCK_EXPONENT,
                        DEFAULT_CLOCK_EXPONENT)
    pairs = [*points, (reference_ghz, reference_s)]
    return law([c for c, _ in pairs], [t for _, t in pairs])


MAC_TYPES = ("Conv2d", "Linear")
"""Layer types whose time the Neurosurgeon-style regression fits on multiply-accumulates; every
other type is fitted on the bytes it reads and writes."""

ASSUMED_KERNEL = 9
"""A convolution's kernel area where a profile recorded no MACs (3 x 3, the zoo's commonest)."""


class NeurosurgeonPredictor(ProfilePredictor):
    """Neurosurgeon's idea (Kang et al., ASPLOS 2017): per-layer-type regressions on layer
    features, fitted on OTHER models, predict the layer times of a model never timed.

    ``fit`` ignores every time in ``edge``'s profile and uses only its structure (layer types,
    MACs, the bytes at each split point). For each layer type, ``time = overhead + m * feature``
    (feature: MACs for convolutions and linear layers, bytes read plus written otherwise) is
    fitted on relative error over the ``peers`` of other models (``fit_layer_regression``); a
    type no peer has takes the slope pooled over its kind. The clock law is
    fitted on the peers' calibrations, each relative to its full-speed forward. The cloud's
    layer times come from the same regressions (the peers are profiled on one machine). With no
    peer of another model it fits on ``edge``'s own times (``in_sample_`` says so). Prediction
    and online learning are ``ProfilePredictor``'s: once it runs, it learns what it measures.
    """

    name = "neurosurgeon"

    def fit(self, edge: Profile, cloud: Profile | None = None,
            peers: Sequence[Profile] = (), law: LawFitter = fit_power_law
            ) -> NeurosurgeonPredictor:
        others = [p for p in peers if p.model != edge.model]
        sources = others or [edge]
        self.in_sample_ = not others
        self.regression_ = fit_layer_regression(sources)
        times = [self.regression_.predict(kind, feature)
                 for kind, feature in layer_features(edge)]
        self.law_ = relative_clock_law(sources, law)
        self.reference_clock_ghz_ = edge.machine.clock_ghz
        self.edge_layer_s_ = list(times)
        self.cloud_layer_s_ = list(times)
        self.offload_bytes_ = tuple(edge.offload_bytes)
        self._start_learning()
        return self


@dataclass(frozen=True, slots=True)
class LayerRegression:
    """``seconds = overhead + slope * feature``: one slope per layer type, a pooled slope for a
    type never seen (over the MAC types for a MAC type, over the others otherwise), and one
    per-layer overhead (the smallest layer time seen: what calling any layer costs)."""

    overhead_s: float
    slopes: Mapping[str, float]
    pooled: Mapping[bool, float]  # is a MAC type -> slope

    def predict(self, kind: str, feature: float) -> float:
        slope = self.slopes.get(kind, self.pooled.get(kind in MAC_TYPES, 0.0))
        return self.overhead_s + slope * feature


def layer_features(profile: Profile) -> list[tuple[str, float]]:
    """(type, feature) of each layer: MACs for ``MAC_TYPES`` (recorded by the profiler, else
    estimated from the tensor shapes), the bytes read plus written otherwise."""
    points = profile.split_points
    features = []
    for layer in profile.layers:
        before, after = points[layer.index - 1], points[layer.index]
        macs = layer.macs if layer.macs is not None else _shape_macs(layer.type, before, after)
        if layer.type in MAC_TYPES and macs:
            features.append((layer.type, float(macs)))
        else:
            features.append((layer.type, float(before.offload_bytes + after.offload_bytes)))
    return features


def fit_layer_regression(profiles: Sequence[Profile]) -> LayerRegression:
    """The per-type lines through every layer of ``profiles`` (``NeurosurgeonPredictor``): the
    overhead is shared (a model's small layers say little about a type's slope, and large ones
    nothing about the overhead), each slope fitted on relative error so that small layers count
    as much as large ones."""
    samples: dict[str, list[tuple[float, float]]] = {}
    for profile in profiles:
        for (kind, feature), seconds in zip(layer_features(profile), profile.layer_times_s,
                                            strict=True):
            samples.setdefault(kind, []).append((feature, seconds))
    overhead = min(t for points in samples.values() for _, t in points)
    pools = {mac: [p for kind, points in samples.items() if (kind in MAC_TYPES) == mac
                   for p in points] for mac in (True, False)}
    return LayerRegression(overhead,
                           {kind: _relative_slope(points, overhead)
                            for kind, points in samples.items()},
                           {mac: _relative_slope(points, overhead)
                            for mac, points in pools.items() if points})


def _relative_slope(points: Sequence[tuple[float, float]], overhead: float) -> float:
    """The slope ``m >= 0`` minimising the squared relative error of ``overhead + m * x`` over
    ``(x, seconds)`` points (closed form)."""
    usable = [(x, t) for x, t in points if t > 0 and x > 0]
    across = sum(x * x / (t * t) for x, t in usable)
    if not across:
        return 0.0
    return max(0.0, sum(x * (t - overhead) / (t * t) for x, t in usable) / across)


def _shape_macs(kind: str, before: SplitPointProfile, after: SplitPointProfile) -> int | None:
    """MACs of a convolution (``ASSUMED_KERNEL``) or a linear layer from its largest input and
    output tensors, for profiles that recorded none."""
    shapes_in = [t.shape for t in before.tensors]
    shapes_out = [t.shape for t in after.tensors]
    if not shapes_in or not shapes_out:
        return None
    source = max(shapes_in, key=math.prod)
    outputs = max(math.prod(shape) for shape in shapes_out)
    if kind == "Conv2d" and len(source) == 4:
        return outputs * source[1] * ASSUMED_KERNEL
    if kind == "Linear" and len(source) >= 2:  # a flatten may travel with it: all but the batch
        return outputs * math.prod(source[1:])
    return None


def relative_clock_law(profiles: Sequence[Profile], law: LawFitter = fit_power_law) -> PowerLaw:
    """A clock law through every calibration point of ``profiles``, each relative to its own
    full-speed forward (only the law's exponent is used: ``PowerLaw.ratio``)."""
    pairs = [(point.clock_ghz, point.latency_s / p.forward_s)
             for p in profiles if p.calibration for point in p.calibration]
    pairs += [(p.machine.clock_ghz, 1.0) for p in profiles if p.calibration]
    if len({clock for clock, _ in pairs}) < 2:
        return PowerLaw(1.0, DEFAULT_CLOCK_EXPONENT)
    return law([c for c, _ in pairs], [r for _, r in pairs])


PREDICTORS: dict[str, Callable[[], Predictor]] = {
    "neurosurgeon": NeurosurgeonPredictor,
    "profile": ProfilePredictor,
    "thesis": ThesisPredictor,
}
"""The registry: a new predictor is a class that satisfies ``Predictor`` and its entry here
(``plan``, ``edge run``, the experiment and its report take it from here)."""


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
