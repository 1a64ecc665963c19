from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgesplit.errors import InvalidArgument, ProfileError
from edgesplit.measuring.dutycycle import DutyCycler
from edgesplit.measuring.machine import describe_machine
from edgesplit.measuring.profiler import load_or_profile
from edgesplit.measuring.store import cached_profile_path, read_profile, write_profile

from .helpers import wait_until


def test_a_real_profile_describes_every_layer_and_split_point(mnist_profile_file: Path) -> None:
    profile = read_profile(mnist_profile_file)
    assert profile.model == "mnist_cnn"
    assert [layer.index for layer in profile.layers] == list(range(1, 10))
    assert profile.offload_bytes[0] == 28 * 28 * 4
    assert all(layer.time_s > 0 for layer in profile.layers)
    # conv1: 10 x 24 x 24 outputs, each over a 5 x 5 kernel of one channel; fc2: 10 x 50.
    macs = {layer.name: layer.macs for layer in profile.layers}
    assert (macs["conv1"], macs["fc2"], macs["relu1"]) == (10 * 24 * 24 * 25, 10 * 50, None)
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


def states(pid: int, samples: int) -> set[str]:
    """The scheduler states (/proc/PID/stat: R running, S sleeping, T stopped) seen."""
    seen = set()
    for _ in range(samples):
        seen.add(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
        time.sleep(0.001)
    return seen


def test_duty_cycling_really_stops_a_busy_process_part_of_the_time() -> None:
    # What the process is seen doing, not how much CPU it got in a window: another process
    # loading the machine changes the second, never the first.
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with DutyCycler(busy.pid, native_ghz=2.0, clock_ghz=0.5) as cycler:
            throttled: set[str] = set()

            def seen_stopped_and_running() -> bool:
                throttled.update(states(busy.pid, 50))
                return {"T", "R"} <= throttled

            wait_until(seen_stopped_and_running, "the busy process seen stopped and running")
            cycler.set_clock(2.0)
            begun = cycler.cycles  # the period under way may still stop it once more
            wait_until(lambda: cycler.cycles >= begun + 2, "a whole period at the new clock")
            free = states(busy.pid, 300)
        assert "T" not in free  # at the native clock it is never stopped
        assert cycler.clock_ghz == 2.0
    finally:
        busy.kill()
        busy.wait()


def test_duty_cycler_refuses_clocks_above_the_machines() -> None:
    with pytest.raises(InvalidArgument, match=r"at most this machine's 2\.0 GHz"):
        DutyCycler(os.getpid(), native_ghz=2.0, clock_ghz=3.0)
