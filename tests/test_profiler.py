from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgesplit.core.machine import describe_machine
from edgesplit.core.profiler import load_or_profile
from edgesplit.core.profiles import cached_profile_path, read_profile, write_profile
from edgesplit.errors import InvalidArgument, ProfileError
from edgesplit.testbed.emulation import DutyCycler


def test_a_real_profile_describes_every_layer_and_split_point(mnist_profile_file: Path) -> None:
    profile = read_profile(mnist_profile_file)
    assert profile.model == "mnist_cnn"
    assert [layer.index for layer in profile.layers] == list(range(1, 10))
    assert profile.offload_bytes[0] == 28 * 28 * 4
    assert all(layer.time_s > 0 for layer in profile.layers)
    assert profile.forward_s > 0
    assert profile.machine.clock_ghz > 0 and profile.machine.threads == 1
    assert [point.clock_ghz for point in profile.calibration] == [0.6, 1.2]
    # Emulated 0.6 GHz is a quarter of this machine's speed or less: clearly slower.
    assert profile.calibration[0].latency_s > profile.forward_s


def test_profiles_are_cached_per_machine_and_model(mnist_profile_file: Path) -> None:
    machine = describe_machine(threads=1)
    path = cached_profile_path("mnist_cnn", machine)
    write_profile(read_profile(mnist_profile_file), path)
    assert load_or_profile("mnist_cnn") == read_profile(path)
    assert cached_profile_path("mnist_cnn", describe_machine(threads=2)) != path


def test_broken_profile_files_are_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "mnist_cnn"}')
    with pytest.raises(ProfileError, match="not a valid edgesplit profile"):
        read_profile(bad)
    with pytest.raises(ProfileError, match="cannot read profile"):
        read_profile(tmp_path / "missing.json")


def cpu_share(pid: int, seconds: float) -> float:
    """CPU time the process used over a wall-clock window, as a fraction of the window."""
    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    began_cpu, began = cpu(), time.monotonic()
    time.sleep(seconds)
    return (cpu() - began_cpu) / (time.monotonic() - began)


def test_duty_cycling_really_slows_a_busy_process() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with DutyCycler(busy.pid, native_ghz=2.0, clock_ghz=0.5) as cycler:
            throttled = cpu_share(busy.pid, 1.0)
            cycler.set_clock(2.0)
            free = cpu_share(busy.pid, 1.0)
        # A quarter of each period: about 25% of a core, against about 100% when let free.
        assert throttled < 0.5
        assert free > 0.6
        assert cycler.clock_ghz == 2.0
    finally:
        busy.kill()
        busy.wait()


def test_duty_cycler_refuses_clocks_above_the_machines() -> None:
    with pytest.raises(InvalidArgument, match=r"at most this machine's 2\.0 GHz"):
        DutyCycler(os.getpid(), native_ghz=2.0, clock_ghz=3.0)
