"""Building an edge runtime from options: the one place that turns settings into parts.

``EdgeOptions`` holds what ``edgesplit edge run`` can be told, as plain values;
``build_runtime`` makes the parts (model, profile, predictor, planner, codec guard, sensors,
client, log) and hands them to ``EdgeRuntime``. The command line and the demo both use it, and so
can a program::

    from edgesplit.edge.factory import EdgeOptions, build_runtime
    edge = build_runtime(EdgeOptions("alexnet", "http://127.0.0.1:8000"))

Profiling (when no profile is given and none is cached) happens here, never in the runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from edgesplit.core import zoo
from edgesplit.core.planning import Objective
from edgesplit.core.profiles import Profile
from edgesplit.core.rescheduling import ReschedulePolicy
from edgesplit.core.splitting import SplitModel
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.client import CloudClient
from edgesplit.edge.engines import build_engine
from edgesplit.edge.measurements import MeasurementLog
from edgesplit.edge.runtime import CodecGuard, EdgeRuntime, Timing
from edgesplit.edge.sensors import ClockSensor, CpufreqClock, Timebase
from edgesplit.errors import InvalidArgument
from edgesplit.measuring.store import cached_planner
from edgesplit.wire.codecs import parse_codec


@dataclass(frozen=True)
class EdgeOptions:
    """What an edge is told: the model, the cloud and how to reach it, what to optimise, which
    codecs it may use, what to assume of the uplink until measured, when to re-plan, how long
    to wait, and where to log. ``cloud_url=None`` runs everything on the edge."""

    model: str
    cloud_url: str | None = None
    objective: Objective = field(default_factory=Objective)
    predictor: str = "profile"
    codecs: tuple[str, ...] = ("raw",)
    bandwidth_kbps: float = 7200.0
    rtt_ms: float = 40.0
    reschedule: ReschedulePolicy = field(default_factory=ReschedulePolicy)
    timing: Timing = field(default_factory=Timing)
    token: str | None = None
    signing: tuple[str, bytes] | None = None  # (key id, secret) for HMAC signatures
    verify: bool | str = True  # or a CA bundle / the cloud's own certificate
    log_dir: Path | None = None
    load_aware: bool = True  # plan with the cloud's reported wait
    engine: str = "torch"  # what runs the edge's layers: edge.engines.ENGINES



def build_runtime(options: EdgeOptions, *, split: SplitModel | None = None,
                  profile: Profile | None = None, cloud_profile: Profile | None = None,
                  peers: Sequence[Profile] | None = None,
                  calibration_inputs: torch.Tensor | None = None,
                  clock: ClockSensor | None = None, link: LinkEstimator | None = None,
                  timebase: Timebase | None = None,
                  transport: httpx.BaseTransport | None = None,
                  sample: torch.Tensor | None = None) -> EdgeRuntime:
    """An ``EdgeRuntime`` made from ``options``.

    A zoo model needs nothing else (its split, this machine's cached profile and its
    calibration inputs are found or made). For a model of your own pass ``split`` and
    ``profile`` (``profile_model(name, split=..., sample=..., clocks_ghz=())``), and
    ``calibration_inputs`` if lossy codecs are allowed; the cloud must serve it under the same
    name. ``clock`` defaults to cpufreq, ``link`` to the options' assumed bandwidth and RTT;
    ``timebase`` to the real time, ``transport`` (to the cloud) to the network. ``sample``
    (one input) is what an engine other than torch exports the heads with (a zoo model's own
    by default).
    """
    model, codecs = options.model, options.codecs
    lossy = any(parse_codec(c).lossy for c in codecs)
    if model not in zoo.MODELS:
        if split is None or profile is None:
            raise InvalidArgument(f"{model!r} is not a zoo model: pass split= and profile=")
        if lossy and calibration_inputs is None:
            raise InvalidArgument("lossy codecs need calibration_inputs to check the model's "
                                  "answers against")
    elif calibration_inputs is None and lossy:
        calibration_inputs = zoo.calibration_inputs(model)
    split = split or zoo.build_split(model)
    if profile is None:
        from edgesplit.measuring.profiler import load_or_profile

        profile = load_or_profile(model)
    if profile.n_layers != split.n_layers:
        raise InvalidArgument(f"the profile has {profile.n_layers} layers, the model "
                              f"{split.n_layers}: profile this model")
    planner = cached_planner(model, profile, options.objective, predictor=options.predictor,
                            codecs=codecs, cloud_profile=cloud_profile, peers=peers)
    client = (CloudClient(options.cloud_url, token=options.token, signing=options.signing,
                          verify=options.verify, transport=transport)
              if options.cloud_url else None)
    if options.engine != "torch" and sample is None and model in zoo.MODELS:
        sample = zoo.sample_input(model)
    engine = build_engine(options.engine, split, sample,
                          [layer.time_s for layer in profile.layers])
    return EdgeRuntime(
        split, planner, engine=engine, client=client, guard=CodecGuard(split, calibration_inputs),
        clock=clock or CpufreqClock(),
        link=link or LinkEstimator(options.bandwidth_kbps, options.rtt_ms),
        reschedule=options.reschedule,
        log=MeasurementLog(options.log_dir) if options.log_dir else None,
        timing=options.timing, timebase=timebase, load_aware=options.load_aware)
