"""Measure a model on this machine: per-layer times, split-point sizes and a clock calibration.

Per-layer times are measured at full speed, with a fixed torch thread count, after warm-up, as the
median of repeats (throttled per-layer times of a few milliseconds are bimodal, docs/design.md
section 5). The clock calibration measures whole forwards in a worker process that a
``DutyCycler`` slows to each emulated clock; the clock-speed law is fitted on those whole-forward
times.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import torch

from edgesplit.core import zoo
from edgesplit.core.profiles import (
    CalibrationPoint,
    LayerProfile,
    Machine,
    Profile,
    SplitPointProfile,
    TensorInfo,
)
from edgesplit.core.splitting import SplitModel
from edgesplit.errors import CalibrationError, InvalidArgument, ProfileError
from edgesplit.measuring.dutycycle import DutyCycler
from edgesplit.measuring.machine import describe_machine
from edgesplit.measuring.store import cached_profile_path, read_profile, store_profile
from edgesplit.models.digest import model_digest

log = logging.getLogger(__name__)

DEFAULT_CLOCKS_GHZ = (0.6, 0.9, 1.2, 1.5)
"""The thesis's Raspberry Pi range; clocks above this machine's own are skipped."""

CALIBRATION_MIN_TIME_S = 0.2
"""Each calibration sample spans at least this long: 20 duty cycles of 10 ms."""

Progress = Callable[[str, int, int], None]  # (what, done, total)


def profile_model(
    name: str,
    *,
    repeats: int = 10,
    warmup: int = 2,
    threads: int = 1,
    clocks_ghz: Sequence[float] = DEFAULT_CLOCKS_GHZ,
    calibration_repeats: int = 3,
    progress: Progress | None = None,
    split: SplitModel | None = None,
    sample: torch.Tensor | None = None,
) -> Profile:
    """Profile model ``name`` on this machine (and calibrate it at ``clocks_ghz``).

    A zoo model is built by name. For a model of your own pass ``split`` and ``sample`` (its
    input); the clock calibration needs a zoo model (it rebuilds it in a worker process), so give
    ``clocks_ghz=()`` and the clock law defaults to time inversely proportional to the clock.
    """
    if repeats < 1 or warmup < 0 or threads < 1 or calibration_repeats < 1:
        raise InvalidArgument(
            "repeats, threads and calibration repeats must be at least 1 and warmup at least 0"
        )
    own_model = name not in zoo.MODELS
    if own_model and (split is None or sample is None):
        raise InvalidArgument(f"{name!r} is not a zoo model: pass split= and sample= to profile "
                              "it")
    if own_model and clocks_ghz:
        raise InvalidArgument(f"clock calibration needs a zoo model; profile {name!r} with "
                              "clocks_ghz=()")
    machine = describe_machine(threads)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = zoo.sample_input(name) if sample is None else sample
        split = split or SplitModel(zoo.build_model(name), x, take=True)
        layer_times, forward_s = measure_layers(split, x, repeats, warmup, progress)
    finally:
        torch.set_num_threads(previous_threads)
    usable = [c for c in clocks_ghz if c <= machine.clock_ghz]
    calibration = (calibrate_clock(name, usable, machine, calibration_repeats, forward_s,
                                   progress) if usable else [])
    return Profile(
        model=name,
        machine=machine,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        repeats=repeats,
        warmup=warmup,
        layers=[LayerProfile(index=layer.index, name=layer.name, type=layer.type, time_s=t)
                for layer, t in zip(split.layers, layer_times, strict=True)],
        split_points=[
            SplitPointProfile(
                split_point=sp.split_point, layer=sp.layer, offload_bytes=sp.offload_bytes,
                tensors=[TensorInfo(name=t.name, shape=list(t.shape), dtype=t.dtype)
                         for t in sp.tensors],
            )
            for sp in split.split_points
        ],
        forward_s=forward_s, calibration=calibration, digest=model_digest(split))


def measure_layers(split: SplitModel, x: torch.Tensor, repeats: int, warmup: int,
                   progress: Progress | None = None) -> tuple[list[float], float]:
    """Median per-layer times and median whole-forward time over ``repeats`` runs."""
    per_run: list[list[float]] = []
    totals: list[float] = []
    for i in range(warmup + repeats):
        timings: list[float] = []
        began = time.perf_counter()
        split(x, timings)
        elapsed = time.perf_counter() - began
        if i >= warmup:
            per_run.append(timings)
            totals.append(elapsed)
        if progress:
            progress("layers", i + 1, warmup + repeats)
    layer_times = [statistics.median(column) for column in zip(*per_run, strict=True)]
    return layer_times, statistics.median(totals)


def calibrate_clock(name: str, clocks_ghz: Sequence[float], machine: Machine, repeats: int,
                    forward_s: float, progress: Progress | None = None) -> list[CalibrationPoint]:
    """Whole-forward latency of ``name`` at each emulated clock, in a duty-cycled worker.

    This machine's speed drifts by tens of percent between seconds, so each throttled sample is
    paired with a full-speed sample taken just before it; the point is ``forward_s`` times the
    median ratio of the pairs.
    """
    command = [sys.executable, "-m", "edgesplit.measuring._forward_worker", name,
               str(machine.threads)]
    worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    points = []
    try:
        _reply(worker)  # the worker has built its model
        with DutyCycler(worker.pid, machine.clock_ghz) as cycler:
            _time_forwards(worker, 1)  # warm-up
            for done, clock in enumerate(clocks_ghz):
                ratios = []
                for _ in range(repeats):
                    cycler.set_clock(machine.clock_ghz)
                    full_speed = _time_forwards(worker, 1)[0]
                    cycler.set_clock(clock)
                    ratios.append(_time_forwards(worker, 1)[0] / full_speed)
                points.append(CalibrationPoint(clock_ghz=clock,
                                               latency_s=forward_s * statistics.median(ratios)))
                if progress:
                    progress("clocks", done + 1, len(clocks_ghz))
    finally:
        assert worker.stdin is not None
        worker.stdin.close()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    return points


def _time_forwards(worker: subprocess.Popen[str], repeats: int) -> list[float]:
    assert worker.stdin is not None
    request = {"warmup": 0, "repeats": repeats, "min_time_s": CALIBRATION_MIN_TIME_S}
    worker.stdin.write(json.dumps(request) + "\n")
    worker.stdin.flush()
    return [float(t) for t in _reply(worker)["times"]]


def _reply(worker: subprocess.Popen[str]) -> dict[str, Any]:
    assert worker.stdout is not None
    line = worker.stdout.readline()
    if not line:
        raise CalibrationError(
            f"the calibration worker exited (code {worker.wait()}) before answering"
        )
    reply: dict[str, Any] = json.loads(line)
    return reply


def load_or_profile(name: str, *, threads: int = 1, refresh: bool = False,
                    progress: Progress | None = None) -> Profile:
    """This machine's profile of ``name`` from the cache, measuring (and caching) it if needed."""
    zoo.get_spec(name)  # an unknown name fails here, before anything is measured
    path = cached_profile_path(name, describe_machine(threads))
    if path.exists() and not refresh:
        try:
            return read_profile(path)
        except ProfileError:
            log.warning("re-profiling %s: the cached profile %s is unreadable", name, path)
    profile = profile_model(name, threads=threads, progress=progress)
    store_profile(profile, path)
    return profile
