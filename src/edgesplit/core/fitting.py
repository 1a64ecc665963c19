"""Curve fitting for the clock-speed laws: pure functions of numbers (scipy, no I/O).

numpy and scipy are imported by ``fit_power_law`` only: evaluating a fitted law, and planning with
one remembered by ``edgesplit.core.fitted``, needs neither.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgesplit.errors import CalibrationError
from edgesplit.extras import needs_extra

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

EXPONENT_LIMIT = 10.0
"""Fitted exponents are kept within +-10: steeper than any clock law of real hardware."""

DEFAULT_CLOCK_EXPONENT = -1.0
"""With no calibration, compute time is taken as inversely proportional to the clock speed."""


@dataclass(frozen=True, slots=True)
class PowerLaw:
    """``y = a * x ** b``."""

    a: float
    b: float

    def __call__(self, x: float) -> float:
        return self.a * float(x**self.b)

    def ratio(self, x: float, reference: float) -> float:
        """``f(x) / f(reference)``: how much longer a time at ``x`` is than at ``reference``."""
        return float((x / reference) ** self.b)


LawFitter = Callable[[Sequence[float], Sequence[float]], PowerLaw]
"""``fit_power_law``'s type: predictors take one, so ``edgesplit.core.fitted`` can hand them the
fit remembered on disk."""


def _clip_start(start: tuple[float, float]) -> tuple[float, float]:
    a, b = start
    return max(a, 1e-12), min(max(b, -EXPONENT_LIMIT + 1e-6), EXPONENT_LIMIT - 1e-6)


def _power(x: NDArray[np.float64], a: float, b: float) -> NDArray[np.float64]:
    import numpy as np

    return np.multiply(a, np.power(x, b))


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Least-squares fit of ``y = a * x ** b`` (as the thesis does, in linear space).

    >>> law = fit_power_law([0.5, 1.0, 2.0], [4.0, 2.0, 1.0])
    >>> round(law.a, 6), round(law.b, 6)
    (2.0, -1.0)
    """
    import numpy as np

    with needs_extra("fitting a clock-speed law"):
        from scipy.optimize import curve_fit  # 113 MB installed: only where a law is fitted

    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.size < 2 or np.unique(xs).size < 2:
        raise CalibrationError(
            f"a power law needs measurements at two or more distinct clock speeds, got {xs.size}"
        )
    if np.any(xs <= 0) or not np.all(np.isfinite(ys)):
        raise CalibrationError("clock speeds must be positive and measurements finite")
    # Start from the straight line through the points in log-log space where that is defined.
    positive = ys > 0
    if positive.sum() >= 2 and np.unique(xs[positive]).size >= 2:
        b0, log_a0 = np.polyfit(np.log(xs[positive]), np.log(ys[positive]), 1)
        start = (math.exp(log_a0), b0)
    else:
        start = (max(float(ys.max()), 1e-9), -1.0)
    bounds = ([0.0, -EXPONENT_LIMIT], [np.inf, EXPONENT_LIMIT])
    try:
        # Bounded, because normalised slopes reach exactly 0 at the top clock, which a power law
        # only approaches as b -> -inf; the bound keeps that degenerate case finite.
        (a, b), _ = curve_fit(_power, xs, ys, p0=_clip_start(start), bounds=bounds,
                              maxfev=20000)
    except (RuntimeError, ValueError) as exc:
        raise CalibrationError(f"the power-law fit did not converge: {exc}") from exc
    if not (math.isfinite(a) and math.isfinite(b)):
        raise CalibrationError("the power-law fit gave non-finite parameters")
    return PowerLaw(float(a), float(b))


def min_max_normalise(values: Sequence[float]) -> list[float]:
    """Scale values to [0, 1] (the thesis normalises each network's slopes this way)."""
    low, high = min(values), max(values)
    if high == low:
        raise CalibrationError("cannot normalise measurements that are all equal")
    return [(v - low) / (high - low) for v in values]


def denormalise(value: float, lower: float, upper: float) -> float:
    """Inverse of min-max normalisation (thesis equation 4.2)."""
    return value * (upper - lower) + lower
