"""The uplink's bandwidth and round-trip time, learned from the edge's own transfers (pure)."""

from __future__ import annotations

import math
from collections import deque

from edgesplit.core.predictors import WIRE_FACTOR
from edgesplit.errors import InvalidArgument

HOLD: list[tuple[float, float]] = []
"""``_change``'s answer for a lone outlier (compared by identity): not yet in the fit."""
RTT_CHANGE_S = 0.02
"""A ping must be off the estimated round trip by this much (and by the change ratio) to be a
change: a loopback's 1 ms against 3 ms is jitter, not a new link."""


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

    A change is taken at once rather than averaged in over the window. A transfer whose time is
    off the estimate's prediction by more than ``change_ratio`` times (or by three times the
    measured ``noise``, whichever is larger) is an outlier; two in a row on the same side are a
    change, and the estimate starts afresh from them (one alone may be a hiccup, or a small
    transfer misread through an RTT not yet known). A probe the edge sent because it doubts the
    estimate (``observe_probe``) is a change on its own, and so is a ping off by both that
    ratio and ``RTT_CHANGE_S``. A timeout is evidence too (``observe_timeout``): the bytes were
    not through in the time waited.
    """

    def __init__(self, bandwidth_kbps: float, rtt_ms: float, *, window: int = 16,
                 decay: float = 0.8, wire_factor: float = WIRE_FACTOR,
                 change_ratio: float = 1.5) -> None:
        if (bandwidth_kbps <= 0 or rtt_ms < 0 or window < 2 or not 0 < decay <= 1
                or change_ratio <= 1):
            raise InvalidArgument("initial bandwidth must be positive, RTT 0 or more, window "
                                  "at least 2, decay in (0, 1] and change ratio above 1")
        self.bandwidth_kbps = bandwidth_kbps
        self.rtt_ms = rtt_ms
        self.decay = decay
        self.wire_factor = wire_factor
        self._points: deque[tuple[float, float]] = deque(maxlen=window)  # (bits, seconds)
        self.samples = 0
        self.change_ratio = change_ratio
        self.noise = 0.1  # mean |log(measured / predicted)| of transfers that fit (a prior)
        self.changes = 0  # how often the estimate started afresh on a change
        self._outlier: tuple[float, float, bool] | None = None  # (bits, seconds, slower)
        self._afresh = False  # fitting the points of a change just taken: all the new link's

    def predict_s(self, nbytes: int) -> float:
        """The network time the estimate predicts for a request of ``nbytes``."""
        return self.rtt_ms / 1000 + nbytes * 8 * self.wire_factor / (self.bandwidth_kbps * 1000)

    def informative(self, nbytes: int) -> bool:
        """Whether a transfer of ``nbytes`` could tell the link from one ten times faster: its
        payload would still take half the round trip (and 5 ms) there. A small transfer cannot
        (the RTT and the overheads of a request hide the difference), however slow the link."""
        payload_s = self.predict_s(nbytes) - self.rtt_ms / 1000
        return payload_s / 10 >= max(self.rtt_ms / 2000, 0.005)

    def bytes_for(self, payload_s: float) -> int:
        """How many bytes the estimated link would carry in ``payload_s`` seconds."""
        return int(payload_s * self.bandwidth_kbps * 1000 / (8 * self.wire_factor))

    def observe_rtt(self, seconds: float) -> None:
        """A round trip with (almost) no payload: a ping."""
        self.observe_transfer(0, seconds)

    def observe_transfer(self, nbytes: int, network_s: float) -> None:
        """A request of ``nbytes`` whose network time (send to answer) was ``network_s``."""
        self._observe(nbytes, network_s, probe=False)

    def observe_probe(self, nbytes: int, network_s: float) -> None:
        """A probe of ``nbytes`` sent because the estimate is in doubt: ``observe_transfer``,
        except that one probe off the estimate is a change."""
        self._observe(nbytes, network_s, probe=True)

    def _observe(self, nbytes: int, network_s: float, *, probe: bool) -> None:
        if not (math.isfinite(network_s) and network_s > 0) or nbytes < 0:
            return
        x = nbytes * 8 * self.wire_factor
        fresh = self._change(x, network_s, probe) if self.samples else None
        if fresh is HOLD:
            return  # a lone outlier waits for the next transfer to say whether it was a change
        if fresh is not None:
            self.changes += 1
            self._forget(payload=x > 0)
            self._points.extend(fresh)
            if x > 0:  # the outlier is in the fresh start: the next must be a change anew
                self._outlier = None
        self._points.append((x, network_s))
        self.samples += 1
        self._afresh = fresh is not None and x > 0
        self._fit()
        self._afresh = False

    def observe_timeout(self, nbytes: int, waited_s: float) -> bool:
        """A request of ``nbytes`` that was not answered within ``waited_s``: if the estimate
        says it should have been, the link is slower than estimated, and the estimate starts
        afresh from the bound (``nbytes`` in ``waited_s``: the fastest the link can be). True
        when it did. Only a caller that knows the link, not the cloud, was slow may say so."""
        rtt_s = self.rtt_ms / 1000
        if nbytes <= 0 or not math.isfinite(waited_s) or waited_s <= rtt_s:
            return False
        bound_kbps = nbytes * 8 * self.wire_factor / (waited_s - rtt_s) / 1000
        if self.bandwidth_kbps <= bound_kbps * (1 + 1e-9):
            return False
        self.changes += 1
        self._outlier = None
        self._forget(payload=True)
        self._points.append((nbytes * 8 * self.wire_factor, waited_s))
        self.samples += 1
        self._fit()
        return True

    def _change(self, x: float, y: float, probe: bool) -> list[tuple[float, float]] | None:
        """If a transfer of ``x`` bits in ``y`` s shows a change, the earlier points to start
        afresh with besides it (none, or the outlier before it); ``HOLD`` if it is a lone
        outlier (it joins the fit late if the next transfer fits: data, if not a change); None
        if it fits. The noise is learned from the transfers that fit."""
        if x == 0:  # a ping: a change of the round trip both relative and absolute
            rtt_s = self.rtt_ms / 1000
            moved = (abs(y - rtt_s) > RTT_CHANGE_S
                     and abs(math.log(y / max(rtt_s, 1e-6))) > math.log(self.change_ratio))
            return [] if moved else None
        error = math.log(y / (self.rtt_ms / 1000 + x / (self.bandwidth_kbps * 1000)))
        floor = math.log(self.change_ratio)
        if abs(error) <= max(floor, 3 * self.noise):
            # Each transfer counts at most the change ratio: errors the widened threshold
            # let in would otherwise widen it further, until no change is ever seen.
            self.noise += 0.1 * (min(abs(error), floor) - self.noise)
            if self._outlier is not None:  # no change after all: the outlier joins the fit
                self._points.append(self._outlier[:2])
                self._outlier = None
            return None
        before, self._outlier = self._outlier, (x, y, error > 0)
        if probe:
            return []
        if before is not None and before[2] == (error > 0):
            return [before[:2]]
        return HOLD

    def _forget(self, *, payload: bool) -> None:
        """Drop the points of the kind (payloads or pings) that a change has made stale."""
        kept = [(x, y) for x, y in self._points if (x > 0) != payload]
        self._points.clear()
        self._points.extend(kept)

    def _fit(self) -> None:
        n = len(self._points)
        weighted = [(self.decay ** (n - 1 - i), x, y) for i, (x, y) in enumerate(self._points)]
        pings = [(w, y) for w, x, y in weighted if x == 0]
        loads = [(w, x, y) for w, x, y in weighted if x > 0]
        if pings:  # a ping measures the round trip directly: trust it, fit only the bandwidth
            # ... unless a transfer came back sooner: no round trip takes longer than one
            # carrying a payload (pings from before the link sped up, or queued behind it).
            rtt_s = min([sum(w * y for w, y in pings) / sum(w for w, _ in pings),
                         *(y for _, _, y in loads)])
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
        # Too alike (or an inconsistent fit): keep the RTT, explain the rest as payload; a
        # lone point (the first), or the points of a change just taken, are taken as they are.
        x, y = self._points[-1]
        step = 1.0 if len(loads) == 1 or self._afresh else 1 - self.decay
        if y > self.rtt_ms / 1000:
            sample = x / (y - self.rtt_ms / 1000) / 1000
            self.bandwidth_kbps += step * (sample - self.bandwidth_kbps)
        else:  # faster than the assumed round trip: the RTT was overestimated
            self.rtt_ms += step * (y * 1000 - self.rtt_ms)
