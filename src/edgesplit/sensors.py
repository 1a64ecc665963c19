"""What the edge knows about itself and its uplink: CPU, clock speed, bandwidth, RTT.

On real hardware the clock comes from cpufreq (through psutil). In an emulated testbed it comes
from the emulator, which is the only place that knows the duty cycle it imposes. Bandwidth and
round-trip time are learned from the edge's own transfers (``LinkEstimator``).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil
import torch

from .errors import EdgesplitError, InvalidArgument
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
    """The CPU's current clock speed from cpufreq (real hardware with DVFS, e.g. a Pi)."""

    def read_ghz(self) -> float:
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

    Pure: callers report what they observed and read the estimates. A transfer of ``nbytes``
    that took ``seconds`` on the wire (the request's network time minus one round trip) is a
    bandwidth sample when it is large enough to say something (``min_bytes``); a round trip
    with almost no payload is an RTT sample. Both are smoothed exponentially. The bandwidth is
    reported as a link rate (goodput times the wire factor), the unit predictors expect.
    """

    def __init__(self, bandwidth_kbps: float, rtt_ms: float, *, smoothing: float = 0.3,
                 min_bytes: int = 32 * 1024, wire_factor: float = 1.045) -> None:
        if bandwidth_kbps <= 0 or rtt_ms < 0 or not 0 < smoothing <= 1:
            raise InvalidArgument("initial bandwidth must be positive, RTT 0 or more and "
                                  "smoothing in (0, 1]")
        self.bandwidth_kbps = bandwidth_kbps
        self.rtt_ms = rtt_ms
        self.smoothing = smoothing
        self.min_bytes = min_bytes
        self.wire_factor = wire_factor
        self.bandwidth_samples = 0
        self.rtt_samples = 0

    def observe_rtt(self, seconds: float) -> None:
        if seconds < 0:
            return
        sample = seconds * 1000
        self.rtt_ms = sample if not self.rtt_samples else (
            self.rtt_ms + self.smoothing * (sample - self.rtt_ms))
        self.rtt_samples += 1

    def observe_transfer(self, nbytes: int, network_s: float) -> None:
        """A request of ``nbytes`` whose network time (send to answer) was ``network_s``."""
        if nbytes < self.min_bytes:
            if nbytes < 4096:  # nearly empty: the network time is a round trip
                self.observe_rtt(network_s)
            return
        wire_s = network_s - self.rtt_ms / 1000
        if wire_s <= 0:
            return
        sample = nbytes * 8 * self.wire_factor / wire_s / 1000
        self.bandwidth_kbps = sample if not self.bandwidth_samples else (
            self.bandwidth_kbps + self.smoothing * (sample - self.bandwidth_kbps))
        self.bandwidth_samples += 1
