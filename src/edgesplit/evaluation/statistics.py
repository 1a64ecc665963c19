"""The report's statistics: bootstrap intervals, paired comparisons, a held-out noise floor,
hypervolume and prediction error. Pure: arrays in, records out, no I/O.

One model and edge of an experiment is a ``Panel``: the oracle's measured latency and cost per
setting, split point and repeat (``[S, P, R]``, NaN where a repeat is missing) and each
chooser's per setting and repeat (``[S, R]``). Values are medians over the repeats; a bootstrap
draw resamples the settings, the same ones for the oracle and every chooser (paired). Repeats
are not resampled: the least of the split points' resampled medians is biased low, which would
shift every interval up; measurement noise is judged by the held-out ``noise_floor`` instead.

Regret of a chooser in a setting (``regrets``), from the medians over repeats:

- ``latency``: its median latency / the best split point's median latency - 1;
- ``cost``: the same on cost;
- ``weighted``: CL's own objective at ``WEIGHT``, ``core.policies.weighted_choice``'s score
  (``(1 - w) * latency' + w * cost'``, each min-max scaled between the measured front's
  extremes) of its point minus the best split point's score: a difference of scaled units,
  not a ratio (0: as good as the best split point under that objective; 1: a whole span).
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
OBJECTIVES = ("latency", "cost", "weighted")
WEIGHT = 0.5
DRAWS = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval (``CONFIDENCE``)."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Panel:
    """One model and edge: the oracle's ``[S, P, R]`` latency and cost, each chooser's
    ``([S, R] latency, [S, R] cost)``."""

    oracle_latency: Array
    oracle_cost: Array
    choosers: Mapping[str, tuple[Array, Array]]


def seed_of(*labels: object, base: int = 0) -> int:
    """A seed that depends only on the labels (not on the order things are computed in)."""
    return zlib.crc32(repr((base, *labels)).encode())


def _median(values: Array) -> Array:
    """Median over the last axis, ignoring NaN (missing repeats) only where there are any.
    A sort and the middle one or two: several times faster than ``np.median`` on the short
    axis of repeats, which the bootstrap takes medians of millions of times."""
    if np.isnan(values).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing slice is NaN
            return np.asarray(np.nanmedian(values, axis=-1))
    ordered = np.sort(values, axis=-1)
    n = values.shape[-1]
    return np.asarray((ordered[..., (n - 1) // 2] + ordered[..., n // 2]) / 2)


def median_of(values: Array) -> Array:
    """The median over repeats (the last axis), missing repeats ignored."""
    return _median(values)


def ratio_of_sums(x: Array, y: Array, seed: int, draws: int = DRAWS) -> Interval:
    """``sum(x) / sum(y) - 1`` in percent over paired settings, with its interval (the
    settings resampled): Table 7.1's comparison."""
    keep = np.isfinite(x) & np.isfinite(y)
    a, b = np.asarray(x, dtype=float)[keep], np.asarray(y, dtype=float)[keep]
    if not a.size or not b.sum():
        return Interval(float("nan"), float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, a.size, (draws, a.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = (a[idx].sum(axis=1) / b[idx].sum(axis=1) - 1) * 100
    return _interval(float((a.sum() / b.sum() - 1) * 100), boot)


def _ratio(value: Array, best: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(best > 0, value / best - 1, np.where(value <= 0, 0.0, np.nan))


def _scores(lat: Array, cost: Array, x: Array, y: Array) -> Array:
    """``weighted_choice``'s score of points (x, y) ``[..., C, S]`` against split points
    (lat, cost) ``[..., S, P]``: scaled between the front's extremes (its fastest point's
    latency and cost, its cheapest's)."""
    cheapest = np.lexsort((lat, cost), axis=-1)[..., :1]
    fastest = np.lexsort((cost, lat), axis=-1)[..., :1]
    lat_low = np.take_along_axis(lat, fastest, -1)[..., 0]
    cost_low = np.take_along_axis(cost, cheapest, -1)[..., 0]
    lat_span = np.take_along_axis(lat, cheapest, -1)[..., 0] - lat_low
    cost_span = np.take_along_axis(cost, fastest, -1)[..., 0] - cost_low
    lat_span = np.where(lat_span > 0, lat_span, 1.0)
    cost_span = np.where(cost_span > 0, cost_span, 1.0)
    return np.asarray((1 - WEIGHT) * (x - lat_low[..., None, :]) / lat_span[..., None, :]
                      + WEIGHT * (y - cost_low[..., None, :]) / cost_span[..., None, :])


def regrets(objective: str, lat: Array, cost: Array, x: Array, y: Array) -> Array:
    """Regret ``[..., C, S]`` of choosers measured at (x, y) ``[..., C, S]`` against the split
    points' medians (lat, cost) ``[..., S, P]`` (see the module's docstring)."""
    if objective == "latency":
        return _ratio(x, np.min(lat, axis=-1)[..., None, :])
    if objective == "cost":
        return _ratio(y, np.min(cost, axis=-1)[..., None, :])
    if objective != "weighted":
        raise ValueError(f"objective {objective!r}: one of {', '.join(OBJECTIVES)}")
    best = np.min(_scores(lat, cost, np.swapaxes(lat, -1, -2), np.swapaxes(cost, -1, -2)),
                  axis=-2)
    result: Array = _scores(lat, cost, x, y) - best[..., None, :]
    return result


def _stack(panel: Panel, names: Sequence[str]) -> tuple[Array, Array]:
    shape = panel.oracle_latency.shape[::2]
    empty = np.empty((0, *shape))
    return (np.stack([panel.choosers[n][0] for n in names]) if names else empty,
            np.stack([panel.choosers[n][1] for n in names]) if names else empty)


@dataclass(frozen=True)
class Medians:
    """Medians over the repeats of (drawn) settings: the split points' ``[B, S, P]`` latency
    and cost, the choosers' ``[B, C, S]`` (in the order of ``names``)."""

    lat: Array
    cost: Array
    x: Array
    y: Array
    names: tuple[str, ...]

    def regrets(self, objective: str, names: Sequence[str | int]) -> Array:
        """``[B, len(names), S]`` regrets of the named choosers; a number names the oracle's
        split point of that number (a fixed split)."""
        def column(name: str | int, of: Array, split_points: Array) -> Array:
            if isinstance(name, int):
                return split_points[:, :, name]
            return of[:, self.names.index(name)]
        x = np.stack([column(n, self.x, self.lat) for n in names], axis=1)
        y = np.stack([column(n, self.y, self.cost) for n in names], axis=1)
        return regrets(objective, self.lat, self.cost, x, y)


def draw_medians(panel: Panel, seed: int, draws: int = DRAWS) -> tuple[Medians, Medians]:
    """(the data's own medians, ``draws`` bootstrap draws of them: the settings resampled,
    the same settings for the oracle and every chooser)."""
    names = tuple(panel.choosers)
    x, y = _stack(panel, names)
    point = Medians(_median(panel.oracle_latency)[None], _median(panel.oracle_cost)[None],
                    _median(x)[None], _median(y)[None], names)
    n_settings = panel.oracle_latency.shape[0]
    s_idx = np.random.default_rng(seed).integers(0, n_settings, (draws, n_settings))
    boot = Medians(point.lat[0][s_idx], point.cost[0][s_idx],
                   np.swapaxes(point.x[0][:, s_idx], 0, 1),
                   np.swapaxes(point.y[0][:, s_idx], 0, 1), names)
    return point, boot


def _interval(value: float, draws: Array) -> Interval:
    finite = draws[np.isfinite(draws)]
    if not finite.size:
        return Interval(float(value), float("nan"), float("nan"))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(float(value), float(low), float(high))


def _nan_stat(stat: Callable[..., Any], values: Array) -> Array:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw of only missing settings
        return np.asarray(stat(values, axis=-1))


def bootstrap_interval(values: Sequence[float] | Array, seed: int, draws: int = DRAWS,
                       stat: Callable[..., Any] = np.nanmean) -> Interval:
    """``stat`` of ``values`` (one per setting) with its percentile bootstrap interval."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    boot = _nan_stat(stat, data[rng.integers(0, len(data), (draws, len(data)))])
    return _interval(float(_nan_stat(stat, data)), boot)


@dataclass(frozen=True)
class ChooserRegret:
    """A chooser's regret over the settings: mean and median, each with its interval."""

    chooser: str
    settings: int
    mean: Interval
    median: Interval


def summarise(names: Sequence[str], point: Array, boot: Array) -> list[ChooserRegret]:
    out = []
    for i, name in enumerate(names):
        n = int(np.isfinite(point[i]).sum())
        out.append(ChooserRegret(
            name, n, _interval(float(_nan_stat(np.nanmean, point[i])),
                               _nan_stat(np.nanmean, boot[:, i])),
            _interval(float(_nan_stat(np.nanmedian, point[i])),
                      _nan_stat(np.nanmedian, boot[:, i]))))
    return out


@dataclass(frozen=True)
class Paired:
    """Chooser ``a`` against ``b`` on the same settings: the mean of the per-setting regret
    differences (a - b; negative: a is better) with its interval, and per setting a win (a
    better by more than ``tie_band``), tie or loss."""

    a: str
    b: str
    settings: int
    difference: Interval
    wins: int
    ties: int
    losses: int
    tie_band: float


def paired(names: Sequence[str], point: Array, boot: Array, tie_band: float) -> list[Paired]:
    """Every ordered pair ``a`` before ``b`` in ``names``."""
    out = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            diff = point[i] - point[j]
            kept = diff[np.isfinite(diff)]
            out.append(Paired(
                a, names[j], int(kept.size),
                _interval(float(np.mean(kept)) if kept.size else float("nan"),
                          _nan_stat(np.nanmean, boot[:, i] - boot[:, j])),
                int((kept < -tie_band).sum()), int((np.abs(kept) <= tie_band).sum()),
                int((kept > tie_band).sum()), tie_band))
    return out


def best_fixed(objective: str, panel: Panel) -> int:
    """The split point with the least mean regret over the settings (in hindsight)."""
    lat, cost = _median(panel.oracle_latency), _median(panel.oracle_cost)
    each = regrets(objective, lat, cost, lat.T, cost.T)  # [P, S]
    return int(np.argmin(_nan_stat(np.nanmean, each)))


@dataclass(frozen=True)
class NoiseFloor:
    """The regret of choosing by one repeat of the oracle: judged on the other repeats
    (``held_out``) and, for contrast, on medians that contain that repeat (``in_sample``)."""

    held_out: Interval | None
    in_sample: Interval
    per_setting: tuple[float, ...]


def _choose_by(objective: str, lat: Array, cost: Array) -> NDArray[np.intp]:
    """Per setting, the split point the objective picks from (lat, cost) ``[S, P]``."""
    each = regrets(objective, lat, cost, lat.T, cost.T)  # [P, S]
    return np.asarray(np.argmin(np.where(np.isfinite(each), each, np.inf), axis=0))


def _judge(objective: str, lat: Array, cost: Array, chosen: NDArray[np.intp]) -> Array:
    pick = chosen[:, None]
    x = np.take_along_axis(lat, pick, -1).T
    y = np.take_along_axis(cost, pick, -1).T
    judged: Array = regrets(objective, lat, cost, x, y)[0]
    return judged


def noise_floor(objective: str, lat: Array, cost: Array, seed: int,
                draws: int = DRAWS) -> NoiseFloor:
    """Per setting and repeat r, the split that repeat r alone picks, judged against the
    medians of the other repeats (leave one repeat out) and of all; averaged over r, then
    over settings with a bootstrap interval. ``lat``, ``cost``: the oracle's ``[S, P, R]``."""
    n_repeats = lat.shape[2]
    held, inside = [], []
    all_lat, all_cost = _median(lat), _median(cost)
    for r in range(n_repeats):
        present = np.isfinite(lat[:, :, r]).all(axis=1)
        chosen = _choose_by(objective, np.nan_to_num(lat[:, :, r], nan=np.inf),
                            np.nan_to_num(cost[:, :, r], nan=np.inf))
        inside.append(np.where(present, _judge(objective, all_lat, all_cost, chosen), np.nan))
        if n_repeats > 1:
            rest = [k for k in range(n_repeats) if k != r]
            judged = _judge(objective, _median(lat[:, :, rest]), _median(cost[:, :, rest]),
                            chosen)
            held.append(np.where(present, judged, np.nan))
    per_setting_in = _nan_stat(np.nanmean, np.stack(inside, axis=-1))
    per_setting = _nan_stat(np.nanmean, np.stack(held, axis=-1)) if held else None
    return NoiseFloor(
        None if per_setting is None else bootstrap_interval(per_setting, seed, draws),
        bootstrap_interval(per_setting_in, seed, draws),
        tuple(float(v) for v in (per_setting if per_setting is not None else per_setting_in)))


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The exact area dominated by ``points`` (both coordinates minimised) and bounded by
    ``reference``; points beyond the reference add nothing."""
    inside = sorted((x, y) for x, y in points if x < reference[0] and y < reference[1])
    area, floor = 0.0, reference[1]
    for x, y in inside:
        if y < floor:
            area += (reference[0] - x) * (floor - y)
            floor = y
    return area


def hypervolume_shares(lat: Array, cost: Array, sets: Mapping[str, Sequence[tuple[Array, Array]]],
                       seed: int, draws: int = DRAWS) -> dict[str, Interval]:
    """Per named set of points (each ``([S] latency, [S] cost)``), the mean over settings of
    its hypervolume / the measured front's, with its interval. Per setting both axes are
    min-max scaled over the split points' medians (``lat``, ``cost`` ``[S, P]``) and the
    reference is (1.1, 1.1): 1 is as good as every split point together."""
    low_l, low_c = lat.min(axis=1), cost.min(axis=1)
    span_l = np.where(lat.max(axis=1) > low_l, lat.max(axis=1) - low_l, 1.0)
    span_c = np.where(cost.max(axis=1) > low_c, cost.max(axis=1) - low_c, 1.0)
    reference = (1.1, 1.1)
    lat_s = (lat - low_l[:, None]) / span_l[:, None]
    cost_s = (cost - low_c[:, None]) / span_c[:, None]
    out = {}
    for name, members in sets.items():
        scaled = [((x - low_l) / span_l, (y - low_c) / span_c) for x, y in members]
        shares = []
        for s in range(lat.shape[0]):
            front = hypervolume(list(zip(lat_s[s], cost_s[s], strict=True)), reference)
            own = [(float(x[s]), float(y[s])) for x, y in scaled
                   if np.isfinite(x[s]) and np.isfinite(y[s])]
            shares.append(hypervolume(own, reference) / front if own and front else np.nan)
        out[name] = bootstrap_interval(shares, seed_of(name, base=seed), draws)
    return out


@dataclass(frozen=True)
class Spread:
    """Absolute percentage errors: how many, their median and interquartile range."""

    n: int
    median: float
    q25: float
    q75: float


def percentage_error(predicted: Sequence[float] | Array,
                     measured: Sequence[float] | Array) -> Spread | None:
    """|predicted / measured - 1| over the pairs where both are known and measured > 0."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    keep = np.isfinite(p) & np.isfinite(m) & (m > 0)
    if not keep.any():
        return None
    ape = np.abs(p[keep] / m[keep] - 1)
    q25, q50, q75 = np.percentile(ape, [25, 50, 75])
    return Spread(int(keep.sum()), float(q50), float(q25), float(q75))
