"""Builders of synthetic test data."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from edgesplit.core import zoo
from edgesplit.core.profiles import (
    CalibrationPoint,
    LayerProfile,
    Machine,
    Profile,
    SplitPointProfile,
)
from edgesplit.core.splitting import SplitModel
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.measurements import Measurement
from edgesplit.edge.runtime import InferenceResult
from edgesplit.wire.codecs import EncodedTensor, encode_tensor


def make_profile(model: str = "toy", times: Sequence[float] = (0.1, 0.2, 0.3),
                 sizes: Sequence[int] = (4000, 3000, 2000, 1000), clock_ghz: float = 2.0,
                 calibration: Sequence[tuple[float, float]] = (),
                 forward_s: float | None = None) -> Profile:
    """A synthetic profile with round numbers, for hand-computed predictions."""
    machine = Machine(cpu="test", cores=2, clock_ghz=clock_ghz, threads=1, torch="x",
                      python="3", platform="test")
    return Profile(
        model=model, machine=machine, created="2026-01-01T00:00:00+00:00", repeats=1, warmup=0,
        layers=[LayerProfile(index=i, name=f"l{i}", type="Linear", time_s=t)
                for i, t in enumerate(times, 1)],
        split_points=[SplitPointProfile(split_point=sp, layer="input" if sp == 0 else f"l{sp}",
                                        offload_bytes=size, tensors=[])
                      for sp, size in enumerate(sizes)],
        forward_s=forward_s if forward_s is not None else sum(times),
        calibration=[CalibrationPoint(clock_ghz=c, latency_s=t) for c, t in calibration],
    )


def measurement(seq: int, **changes: object) -> Measurement:
    """A measurement row with placeholder values (a quoted, comma-laden fallback text)."""
    values: dict[str, object] = {name: 0.0 for name in Measurement.__dataclass_fields__}
    values |= {"seq": seq, "run": "r1", "time": "2026-01-01T00:00:00Z", "model": "m",
               "strategy": "rank", "edge": "own", "predictor": "profile", "codec": "raw",
               "split_point": 3, "offload_bytes": 10, "sent_bytes": 12, "finished": "cloud",
               "fallback": 'refused, "quoted", with commas', "replan": "", "top1_class": 7}
    return Measurement(**(values | changes))  # type: ignore[arg-type]


class SetLink(LinkEstimator):
    """A link estimate the test sets by hand: what the runtime learns from traffic is ignored,
    so the test decides exactly when conditions change. It is exact, so it has no noise (the
    estimator's prior would raise the hysteresis to 20%)."""

    def __init__(self, bandwidth_kbps: float, rtt_ms: float) -> None:
        super().__init__(bandwidth_kbps, rtt_ms)
        self.noise = 0.0

    def observe_rtt(self, seconds: float) -> None:
        pass

    def observe_transfer(self, nbytes: int, network_s: float) -> None:
        pass

    def observe_probe(self, nbytes: int, network_s: float) -> None:
        pass

    def observe_timeout(self, nbytes: int, waited_s: float) -> bool:
        return False


class ManualClock:
    """A monotonic clock for the runtime that moves only when the test says: re-check intervals
    pass by events, not by sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    """Poll ``condition`` until it holds: an event with a generous bound, never a fixed pause
    (on a busy machine the bound only makes a broken test fail, never a slow one)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:g} s")
        time.sleep(0.02)


def mnist_request(split: SplitModel) -> tuple[list[EncodedTensor], Any]:
    """What an edge sends for the MNIST CNN's sample at split point 5, and the right answer."""
    x = zoo.sample_input("mnist_cnn")
    return [encode_tensor(t, name="x") for t in split.head(x, 5)], split(x)


def finished_alone(result: InferenceResult, split: SplitModel, reason: str,
                   model: str = "mnist_cnn", slack_s: float = 10.0) -> None:
    """The edge answered the sample right (the MNIST CNN's is a 2), by itself, and logged why;
    it gave up at its deadline rather than wait for the answer: the latency is bounded by the
    deadline plus ten times its own time for the whole model and ``slack_s``, a bound that a
    busy machine does not reach (CI saw 0.6 s over the deadline) and that the clouds these
    tests stall (for 60 s and more) exceed."""
    x = zoo.sample_input(model)
    began = time.perf_counter()
    expected = split(x)
    local_s = time.perf_counter() - began
    m = result.measurement
    assert m.finished == "edge", m
    assert reason in m.fallback, m.fallback
    assert torch.allclose(result.output, expected, atol=1e-5)
    assert m.top1_class == 2  # the sample digit
    assert m.latency_s <= m.deadline_s + 10 * local_s + slack_s, (m.latency_s, m.deadline_s)
