"""What the edge knows about its clock speed (cpufreq on real hardware, a file in a testbed),
and the time it reads (``Timebase``).

On real hardware the clock comes from cpufreq (through psutil). In an emulated testbed it comes
from the emulator, which is the only place that knows the duty cycle it imposes. The uplink's
bandwidth and round-trip time are learned by ``edgesplit.core.uplink.LinkEstimator``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import psutil

from edgesplit.measuring.machine import native_clock_ghz


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Timebase:
    """Every time the edge runtime reads, handed to it in one piece (tests pass their own):
    ``monotonic`` paces re-planning, pings, probes and re-checks, ``stopwatch`` times the parts
    of an inference (a test that moves ``monotonic`` by hand still measures real work),
    ``sleep`` waits for the next slot, and ``wall`` stamps the log."""

    monotonic: Callable[[], float] = time.monotonic
    stopwatch: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep
    wall: Callable[[], datetime] = _utc_now


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
