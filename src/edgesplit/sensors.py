"""What the edge knows about itself and its uplink: CPU, clock speed, bandwidth, RTT.

On real hardware the clock comes from cpufreq (through psutil). In an emulated testbed it comes
from the emulator, which is the only place that knows the duty cycle it imposes. Bandwidth and
round-trip time are learned from the edge's own transfers (``LinkEstimator``).
"""

from __future__ import annotations

import math
import os
import platform
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil
import torch

from .errors import EdgesplitError, InvalidArgument
from .predictors import WIRE_FACTOR
from .profiles import Machine


def native_clock_ghz() -> float:
    """The CPU's clock speed in GHz: cpufreq's maximum, else its current value, else cpuinfo."""
    freq = psutil.cpu_freq()
    if freq is not None:
        mhz = freq.max or freq.current
        if mhz and mhz > 0:
            return round(mhz / 1000.0, 3)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"@\s*([\d.]+)\s*GHz", cpuinfo.read_text())
        if match:
            return float(match.group(1))
    raise EdgesplitError(
        "cannot read this machine's clock speed; set EDGESPLIT_CLOCK_GHZ to it (e.g. 1.5)"
    )


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def describe_machine(threads: int) -> Machine:
    """This machine, as profiles record it. ``EDGESPLIT_CLOCK_GHZ`` overrides the clock."""
    clock = os.environ.get("EDGESPLIT_CLOCK_GHZ")
    return Machine(
        cpu=cpu_name(),
        cores=os.cpu_count() or 1,
        clock_ghz=float(clock) if clock else native_clock_ghz(),
        threads=threads,
        torch=torch.__version__,
        python=platform.python_version(),
        platform=f"{platform.system()}-{platform.machine()}",
    )


class ClockSensor(Protocol):
    def read_ghz(self) -> float: ...


@dataclass(frozen=True)
class FixedClock:
    """A clock speed given by the user (``--clock-ghz``)."""

    ghz: float

    def read_ghz(self) -> float:
        return self.ghz


class CpufreqClock:
    """The CPU's current clock speed from cpufreq (real hardware with DVFS, e.g. a Pi);
    ``EDGESPLIT_CLOCK_GHZ`` overrides it, as it overrides the clock profiles record."""

    def read_ghz(self) -> float:
        override = os.environ.get("EDGESPLIT_CLOCK_GHZ")
        if override:
            return float(override)
        freq = psutil.cpu_freq()
        if freq is not None and freq.current > 0:
            return freq.current / 1000.0
        return native_clock_ghz()


class FileClock:
    """The emulated clock speed a testbed writes to a file (one number, GHz).

    The emulator throttling this process is the only one that knows the clock it imposes; the
    last good value is kept if the file is briefly missing or half-written.
    """

    def __init__(self, path: Path, default_ghz: float) -> None:
        self.path = Path(path)
        self.last_ghz = default_ghz

    def read_ghz(self) -> float:
        try:
            value = float(self.path.read_text().strip())
        except (OSError, ValueError):
            return self.last_ghz
        if value > 0:
            self.last_ghz = value
        return self.last_ghz


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
