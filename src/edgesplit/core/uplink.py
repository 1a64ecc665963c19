"""The uplink's bandwidth and round-trip time, learned from the edge's own transfers (pure)."""

from __future__ import annotations

import math
from collections import deque

from edgesplit.core.predictors import WIRE_FACTOR
from edgesplit.errors import InvalidArgument


class LinkEstimator:
    """Uplink bandwidth and round-trip time, learned from the edge's own transfers.

    Pure: callers report what they observed and read the estimates. Every offload of ``nbytes``
    that spent ``network_s`` between sending and the answer is a point on the line
    ``network_s = RTT + bits / bandwidth``; a ping is a point with no payload. Over the recent
    points, newer ones weighing more: the pings give the RTT and the offloads, less that RTT,
    the bandwidth; with no ping in the window a least-squares fit of the line lets offloads of
    different sizes pin down both; while they are too alike to, the RTT stays as last known and
    the bandwidth follows from it. Bandwidth is reported as a link rate (goodput times the wire
    factor), the unit the predictors expect.
    """

    def __init__(self, bandwidth_kbps: float, rtt_ms: float, *, window: int = 16,
                 decay: float = 0.8, wire_factor: float = WIRE_FACTOR) -> None:
        if bandwidth_kbps <= 0 or rtt_ms < 0 or window < 2 or not 0 < decay <= 1:
            raise InvalidArgument("initial bandwidth must be positive, RTT 0 or more, window "
                                  "at least 2 and decay in (0, 1]")
        self.bandwidth_kbps = bandwidth_kbps
        self.rtt_ms = rtt_ms
        self.decay = decay
        self.wire_factor = wire_factor
        self._points: deque[tuple[float, float]] = deque(maxlen=window)  # (bits, seconds)
        self.samples = 0

    def observe_rtt(self, seconds: float) -> None:
        """A round trip with (almost) no payload: a ping."""
        self.observe_transfer(0, seconds)

    def observe_transfer(self, nbytes: int, network_s: float) -> None:
        """A request of ``nbytes`` whose network time (send to answer) was ``network_s``."""
        if not (math.isfinite(network_s) and network_s > 0) or nbytes < 0:
            return
        self._points.append((nbytes * 8 * self.wire_factor, network_s))
        self.samples += 1
        self._fit()

    def _fit(self) -> None:
        n = len(self._points)
        weighted = [(self.decay ** (n - 1 - i), x, y) for i, (x, y) in enumerate(self._points)]
        pings = [(w, y) for w, x, y in weighted if x == 0]
        loads = [(w, x, y) for w, x, y in weighted if x > 0]
        if pings:  # a ping measures the round trip directly: trust it, fit only the bandwidth
            rtt_s = sum(w * y for w, y in pings) / sum(w for w, _ in pings)
            self.rtt_ms = rtt_s * 1000
            seconds = sum(w * x * (y - rtt_s) for w, x, y in loads)
            if seconds > 0:
                self.bandwidth_kbps = sum(w * x * x for w, x, _ in loads) / seconds / 1000
            return
        total = sum(w for w, _, _ in loads)
        mean_x = sum(w * x for w, x, _ in loads) / total
        mean_y = sum(w * y for w, _, y in loads) / total
        sxx = sum(w * (x - mean_x) ** 2 for w, x, _ in loads)
        sxy = sum(w * (x - mean_x) * (y - mean_y) for w, x, y in loads)
        if (sxx / total) ** 0.5 > 0.25 * mean_x:  # sizes differ enough to tell both apart
            seconds_per_bit = sxy / sxx
            rtt_s = mean_y - seconds_per_bit * mean_x
            if seconds_per_bit > 0 and rtt_s >= 0:
                self.bandwidth_kbps = 1 / seconds_per_bit / 1000
                self.rtt_ms = rtt_s * 1000
                return
        # Too alike (or an inconsistent fit): keep the RTT, explain the rest as payload.
        x, y = self._points[-1]
        if y > self.rtt_ms / 1000:
            sample = x / (y - self.rtt_ms / 1000) / 1000
            self.bandwidth_kbps += (1 - self.decay) * (sample - self.bandwidth_kbps)
        else:  # faster than the assumed round trip: the RTT was overestimated
            self.rtt_ms += (1 - self.decay) * (y * 1000 - self.rtt_ms)
