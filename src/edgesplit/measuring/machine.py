"""This machine as profiles record it: CPU name, core count, clock speed, library versions."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import psutil

from edgesplit.core.profiles import Machine
from edgesplit.errors import EdgesplitError


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
        torch=_torch_version(),
        python=platform.python_version(),
        platform=f"{platform.system()}-{platform.machine()}",
    )


def _torch_version() -> str:
    """torch's version without importing torch (seconds on a small machine)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"
