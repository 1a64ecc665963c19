"""The edge runtime: the one place that wires sensors, planner, model, wire and log together.

For every inference it reads the clock and its bandwidth and RTT estimates, re-plans when due
(timer or a condition past its threshold, with hysteresis), runs the head, offloads what crosses
the cut over one kept-alive connection, and logs predicted against measured latencies (thesis
equations 3.1 to 3.4). What it measures flows back: its own layer times and the cloud's, the bytes
each codec produced and the uplink's speed and delay. If the cloud is down, refuses, or misses the
deadline derived from the plan, the edge finishes the network itself: no inference is lost. It
checks on the cloud every few seconds and resumes offloading when it answers.

>>> from edgesplit.edge.runtime import EdgeRuntime
>>> from edgesplit.core.zoo import sample_input
>>> with EdgeRuntime("mnist_cnn", cloud_url=None) as edge:   # no cloud: all on the edge
...     result = edge.infer(sample_input("mnist_cnn"))
>>> result.measurement.finished, result.measurement.prediction
('edge', 2)
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from edgesplit.core import zoo
from edgesplit.core.cost import cost_usd
from edgesplit.core.planning import Objective, Planner, SplitPlan
from edgesplit.core.predictors import Conditions, ProfilePredictor, make_predictor
from edgesplit.core.profiles import Profile
from edgesplit.core.rescheduling import ReschedulePolicy, Rescheduler, with_hysteresis
from edgesplit.core.splitting import SplitModel
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.client import CloudClient
from edgesplit.edge.measurements import LayerTime, Measurement, MeasurementLog
from edgesplit.edge.sensors import ClockSensor, CpufreqClock
from edgesplit.errors import CloudUnavailable, InvalidArgument, OffloadTimeout, WireFormatError
from edgesplit.wire.codecs import decode_tensor, encode_tensor, parse_codec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceResult:
    output: torch.Tensor
    measurement: Measurement


class CodecGuard:
    """Allows a lossy codec at a split point only if it keeps the top-1 answer on the
    calibration inputs (checked once per pair, when a plan first wants it)."""

    def __init__(self, split: SplitModel, inputs: torch.Tensor | None) -> None:
        self.split = split
        self.inputs = inputs
        self._expected: torch.Tensor | None = None
        self._verdicts: dict[tuple[int, str], bool] = {}

    def allows(self, split_point: int, codec: str) -> bool:
        parsed = parse_codec(codec)
        if not parsed.lossy:
            return True
        key = (split_point, codec)
        if key not in self._verdicts:
            assert self.inputs is not None, "lossy codecs were allowed without inputs to check"
            if self._expected is None:
                self._expected = _top1(self.split(self.inputs))
            sent = self.split.head(self.inputs, split_point)
            received = []
            for tensor in sent:
                encoded = encode_tensor(tensor, parsed)
                received.append(decode_tensor(encoded.payload, encoded.shape, encoded.datatype,
                                              encoded.parameters).to(tensor.dtype))
            output = self.split.tail(received, split_point)
            self._verdicts[key] = bool(torch.equal(_top1(output), self._expected))
            log.info("codec %s at split point %d %s the top-1 answers", codec, split_point,
                     "keeps" if self._verdicts[key] else "changes")
        return self._verdicts[key]


def _top1(output: torch.Tensor) -> torch.Tensor:
    return output.reshape(output.shape[0], -1).argmax(1)


class EdgeRuntime:
    """Runs one model split between this edge and a cloud, re-planning as conditions change.

    ``cloud_url=None`` runs everything on the edge (nothing to offload to). Profiles default to
    this machine's cached profile of a zoo model. For a model of your own pass ``split`` and
    ``profile`` (``profile_model(name, split=..., sample=..., clocks_ghz=())``), and
    ``calibration_inputs`` if you allow lossy codecs; the cloud must serve it under the same
    name (``create_app(service=CloudService({name: split}))``). ``codecs`` lists the codecs the
    planner may use (lossy ones only where they keep the top-1 answer).
    """

    def __init__(
        self,
        model: str,
        cloud_url: str | None,
        *,
        objective: Objective | None = None,
        predictor: str = "profile",
        codecs: Sequence[str] = ("raw",),
        split: SplitModel | None = None,
        profile: Profile | None = None,
        cloud_profile: Profile | None = None,
        calibration_inputs: torch.Tensor | None = None,
        clock: ClockSensor | None = None,
        link: LinkEstimator | None = None,
        reschedule: ReschedulePolicy | None = None,
        token: str | None = None,
        signing: tuple[str, bytes] | None = None,
        verify: bool | str = True,
        log_dir: Path | None = None,
        deadline_factor: float = 3.0,
        min_deadline_s: float = 1.0,
        retry_s: float = 2.0,
        probe_bytes: int = 64 * 1024,
        probe_interval_s: float = 15.0,
        ping_interval_s: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if deadline_factor < 1 or min_deadline_s <= 0 or retry_s <= 0:
            raise InvalidArgument("deadline factor must be at least 1, minimum deadline and "
                                  "retry interval positive")
        for codec in codecs:
            parse_codec(codec)
        self.model = model
        self.objective = objective or Objective()
        self.predictor_name = predictor
        own_model = model not in zoo.MODELS
        if own_model and (split is None or profile is None):
            raise InvalidArgument(f"{model!r} is not a zoo model: pass split= and profile=")
        if own_model and calibration_inputs is None and any(parse_codec(c).lossy
                                                            for c in codecs):
            raise InvalidArgument("lossy codecs need calibration_inputs to check the model's "
                                  "answers against")
        self.split = split or SplitModel(zoo.build_model(model), zoo.sample_input(model))
        if profile is None:
            from edgesplit.core.profiler import load_or_profile

            profile = load_or_profile(model)
        if profile.n_layers != self.split.n_layers:
            raise InvalidArgument(f"the profile has {profile.n_layers} layers, the model "
                                  f"{self.split.n_layers}: profile this model")
        self.predictor = make_predictor(predictor).fit(profile, cloud_profile)
        self.planner = Planner(model, [layer.name for layer in self.split.layers],
                               self.predictor, self.objective, codecs)
        self.guard = CodecGuard(self.split, calibration_inputs if calibration_inputs is not None
                                else None if own_model else zoo.calibration_inputs(model))
        self.clock = clock or CpufreqClock()
        self.link = link or LinkEstimator(bandwidth_kbps=7200, rtt_ms=40)
        self.policy = reschedule or ReschedulePolicy()
        self.rescheduler = Rescheduler(self.policy)
        self.log = MeasurementLog(log_dir) if log_dir else None
        self.client = (CloudClient(cloud_url, token=token, signing=signing, verify=verify)
                       if cloud_url else None)
        self.deadline_factor = deadline_factor
        self.min_deadline_s = min_deadline_s
        self.retry_s = retry_s
        self.probe_bytes = probe_bytes
        self.probe_interval_s = probe_interval_s
        self.ping_interval_s = ping_interval_s
        self._now = monotonic
        self._started = monotonic()
        self.run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
        self._seq = 0
        self._excluded: set[tuple[int, str]] = set()
        self.plan: SplitPlan | None = None
        self.cloud_down_reason: str | None = None if self.client else "no cloud configured"
        self._retry_at = 0.0
        self._last_probe = self._last_ping = -float("inf")

    # -- the loop ---------------------------------------------------------------------------

    def infer(self, x: torch.Tensor) -> InferenceResult:
        """One inference: plan if due, split, offload (or finish locally), learn, log."""
        now = self._now()
        conditions = self.conditions()
        replan = self.rescheduler.due(now, conditions) or ""
        if replan:
            self.plan = self._replan(conditions)
            self.rescheduler.planned(now, conditions)
        assert self.plan is not None
        self._maybe_reconnect(now)
        if self.cloud_down_reason is not None:
            return self._finish(self._run_locally(x, self.cloud_down_reason), conditions, replan)
        return self._finish(self._offload(x, self.plan), conditions, replan)

    def run(self, inputs: Iterable[torch.Tensor], *, count: int | None = None,
            duration_s: float | None = None, interval_s: float = 0.0,
            on_result: Callable[[InferenceResult], None] | None = None) -> list[InferenceResult]:
        """Infer over ``inputs``: once each (read lazily), or cycled until ``count``
        inferences or ``duration_s`` seconds.

        Between inferences it pings the cloud every ``ping_interval_s`` and, when there is idle
        time before the next slot, probes the bandwidth every ``probe_interval_s``."""
        if count is None and duration_s is None:
            stream: Iterable[torch.Tensor] = inputs
        else:
            pool = list(inputs)
            if not pool:
                raise InvalidArgument("no inputs to run")
            stream = itertools.cycle(pool)
        results: list[InferenceResult] = []
        began = self._now()
        for x in stream:
            if (count is not None and len(results) >= count) or (
                    duration_s is not None and self._now() - began >= duration_s):
                break
            slot = self._now()
            result = self.infer(x)
            results.append(result)
            if on_result:
                on_result(result)
            if self._now() - self._last_ping >= self.ping_interval_s:
                self.ping()
            if interval_s - (self._now() - slot) > 0.2:
                self.probe_bandwidth()
            idle = interval_s - (self._now() - slot)
            if idle > 0:
                time.sleep(idle)
        return results

    def conditions(self) -> Conditions:
        return Conditions(self.link.bandwidth_kbps, self.link.rtt_ms, self.clock.read_ghz())

    def check_cloud(self) -> str | None:
        """Ask the cloud about this model before relying on it.

        A cloud that refuses this edge's credentials, does not serve the model, or serves a
        different model under its name is a configuration mistake: ``InvalidArgument``. A cloud
        that cannot be reached now may come up later: the reason is returned (the edge runs
        locally meanwhile). None when all is well.
        """
        if self.client is None:
            return None
        try:
            status, body = self.client.model_metadata(self.model)
        except CloudUnavailable as exc:
            return str(exc)
        if status in (401, 403):
            raise InvalidArgument(f"the cloud refused this edge's credentials ({status}: {body}); "
                                  "check --token or --hmac-key-id/--hmac-key-file")
        if status == 404:
            raise InvalidArgument(f"the cloud at {self.client.base_url} does not serve "
                                  f"{self.model!r} ({body})")
        if status >= 400:
            return f"the cloud answered {status}: {body}"
        served = len((body or {}).get("parameters", {}).get("split_points", []))
        if served and served != self.split.n_layers + 1:
            raise InvalidArgument(
                f"the cloud's {self.model} has {served} split points, this edge's "
                f"{self.split.n_layers + 1}: they are not the same model")
        return None

    def ping(self) -> None:
        """One round trip to the cloud: a clean RTT sample (and a liveness check)."""
        if self.client is None or self.cloud_down_reason is not None:
            return
        self._last_ping = self._now()
        self._try_ping()

    def _try_ping(self) -> bool:
        assert self.client is not None
        try:
            self.link.observe_rtt(self.client.ping(deadline_s=self.min_deadline_s))
        except CloudUnavailable as exc:
            self._mark_down(str(exc))
            return False
        return True

    def probe_bandwidth(self) -> None:
        """Send ``probe_bytes`` to the cloud when the last probe is old enough (idle time)."""
        if (self.client is None or self.cloud_down_reason is not None
                or self._now() - self._last_probe < self.probe_interval_s):
            return
        self._last_probe = self._now()
        expected = self.probe_bytes * 8 / (self.link.bandwidth_kbps * 1000)
        try:
            seconds = self.client.probe(self.probe_bytes, deadline_s=max(
                self.min_deadline_s, self.deadline_factor * expected))
        except CloudUnavailable as exc:
            self._mark_down(str(exc))
            return
        self.link.observe_transfer(self.probe_bytes, seconds)

    def close(self) -> None:
        if self.client:
            self.client.close()
        if self.log:
            self.log.close()

    def __enter__(self) -> EdgeRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the parts --------------------------------------------------------------------------

    def _replan(self, conditions: Conditions) -> SplitPlan:
        current = self.plan.split_point if self.plan else None
        while True:
            plan = self.planner.plan(conditions, frozenset(self._excluded))
            plan = with_hysteresis(plan, current, self.policy.hysteresis)
            if self.guard.allows(plan.split_point, plan.codec):
                return plan
            self._excluded.add((plan.split_point, plan.codec))

    def _offload(self, x: torch.Tensor, plan: SplitPlan) -> _Outcome:
        sp, codec = plan.split_point, parse_codec(plan.codec)
        edge_layers: list[float] = []
        began = time.perf_counter()
        sent = self.split.head(x, sp, edge_layers)
        encode_began = time.perf_counter()
        encoded = [encode_tensor(t, codec, spec.name)
                   for t, spec in zip(sent, self.split.split_points[sp].tensors, strict=True)]
        edge_s = time.perf_counter() - began
        outcome = _Outcome(sp=sp, codec=plan.codec, edge_layers=edge_layers, edge_s=edge_s,
                           codec_s=time.perf_counter() - encode_began,
                           offload_bytes=sum(t.numel() * t.element_size() for t in sent),
                           encoded_bytes=sum(len(e.payload) for e in encoded))
        chosen = plan.chosen
        deadline = max(self.min_deadline_s,
                       self.deadline_factor * (chosen.comm_s + chosen.cloud_s))
        outcome.deadline_s = deadline
        assert self.client is not None
        try:
            reply = self.client.infer(self.model, sp, encoded, deadline,
                                      request_id=str(self._seq + 1))
            self._check_reply(reply.output, reply.layer_times_s, sp)
        except CloudUnavailable as exc:
            if isinstance(exc, OffloadTimeout):  # it took at least this long: the link is slower
                self.link.observe_transfer(outcome.encoded_bytes, deadline)
            self._mark_down(str(exc))
            local_layers: list[float] = []
            outcome.output = self.split.tail(sent, sp, local_layers)
            outcome.local_layers = local_layers
            outcome.fallback = str(exc)
            outcome.latency_s = time.perf_counter() - began
            return outcome
        outcome.latency_s = time.perf_counter() - began
        outcome.output = reply.output
        outcome.cloud_s = reply.cloud_s
        outcome.cloud_layers = reply.layer_times_s
        outcome.sent_bytes = reply.request_bytes
        outcome.response_bytes = reply.response_bytes
        self.link.observe_transfer(reply.request_bytes, reply.round_trip_s - reply.cloud_s)
        return outcome

    def _check_reply(self, output: torch.Tensor, layer_times: list[float], sp: int) -> None:
        """An answer must look like this model's output, timed layer by layer."""
        n = self.split.n_layers
        try:
            self.split.check_tensors([output], n)
        except WireFormatError as exc:
            raise CloudUnavailable(f"the cloud's answer is not this model's output: {exc}"
                                   ) from exc
        if len(layer_times) != n - sp:
            raise CloudUnavailable(f"the cloud timed {len(layer_times)} layers; split point "
                                   f"{sp} leaves {n - sp}")

    def _run_locally(self, x: torch.Tensor, reason: str) -> _Outcome:
        n = self.split.n_layers
        layers: list[float] = []
        began = time.perf_counter()
        output = self.split(x, layers)
        elapsed = time.perf_counter() - began
        return _Outcome(sp=n, codec="raw", edge_layers=layers, edge_s=elapsed, codec_s=0.0,
                        offload_bytes=0, encoded_bytes=0, output=output,
                        latency_s=elapsed, fallback=f"offline: {reason}")

    def _finish(self, o: _Outcome, conditions: Conditions, replan: str) -> InferenceResult:
        assert self.plan is not None
        self._seq += 1
        n = self.split.n_layers
        local = o.fallback != ""
        if local:
            edge_s, cloud_s, comm_s = o.latency_s, 0.0, 0.0
        else:
            edge_s, cloud_s = o.edge_s, o.cloud_s
            comm_s = max(0.0, o.latency_s - edge_s - cloud_s)
        response_s = o.response_bytes * 8 / (1000 * conditions.bandwidth_kbps)
        # Equation 3.3 subtracts the estimated half round trip and answer time; it is never
        # allowed below zero when those estimates run high.
        comm_thesis_s = max(0.0, comm_s - conditions.rtt_ms / 2000 - response_s)
        layer_times = {i: t for i, t in enumerate(o.edge_layers + o.local_layers, 1)}
        if isinstance(self.predictor, ProfilePredictor):
            cloud_layers = {o.sp + i: t for i, t in enumerate(o.cloud_layers, 1)}
            self.predictor.partial_fit(
                clock_ghz=conditions.clock_ghz, edge_layer_s=layer_times,
                cloud_layer_s=cloud_layers or None, codec=None if local else o.codec,
                split_point=o.sp, encoded_bytes=o.encoded_bytes, codec_s=o.codec_s)
        predicted = self.plan.candidate(o.sp)
        objective = self.objective
        measurement = Measurement(
            seq=self._seq, run=self.run_id,
            time=datetime.now(UTC).isoformat(timespec="milliseconds"),
            elapsed_s=round(self._now() - self._started, 6), model=self.model,
            strategy=str(objective.strategy), weight=objective.weight, edge=str(objective.edge),
            predictor=self.predictor_name, codec=o.codec, split_point=o.sp,
            clock_ghz=conditions.clock_ghz, bandwidth_kbps=round(conditions.bandwidth_kbps, 3),
            rtt_ms=round(conditions.rtt_ms, 3), predicted_edge_s=predicted.edge_s,
            predicted_comm_s=predicted.comm_s, predicted_cloud_s=predicted.cloud_s,
            predicted_latency_s=predicted.latency_s, predicted_cost_usd=predicted.cost_usd,
            edge_s=edge_s, comm_s=comm_s, comm_thesis_s=comm_thesis_s, cloud_s=cloud_s,
            latency_s=o.latency_s,
            cost_usd=cost_usd(edge_s, cloud_s, o.sent_bytes, objective.edge, objective.prices),
            offload_bytes=o.offload_bytes, sent_bytes=o.sent_bytes, deadline_s=o.deadline_s,
            finished="edge" if local else "cloud", fallback=o.fallback, replan=replan,
            prediction=int(_top1(o.output)[0]),
        )
        if self.log:
            names = [layer.name for layer in self.split.layers]
            rows = [LayerTime(self._seq, self.run_id, "edge", i, names[i - 1], t)
                    for i, t in layer_times.items()]
            rows += [LayerTime(self._seq, self.run_id, "cloud", o.sp + i, names[o.sp + i - 1], t)
                     for i, t in enumerate(o.cloud_layers, 1) if o.sp + i <= n]
            self.log.append(measurement, rows)
        return InferenceResult(o.output, measurement)

    def _mark_down(self, reason: str) -> None:
        if self.cloud_down_reason is None:
            log.warning("finishing on the edge: %s", reason)
        self.cloud_down_reason = reason
        self._retry_at = self._now() + self.retry_s

    def _maybe_reconnect(self, now: float) -> None:
        if self.client is None or self.cloud_down_reason is None or now < self._retry_at:
            return
        if self._try_ping():
            log.info("the cloud answers again: offloading resumes")
            self.cloud_down_reason = None


@dataclass
class _Outcome:
    """What happened to one inference, before it is turned into a measurement."""

    sp: int
    codec: str
    edge_layers: list[float]
    edge_s: float
    codec_s: float
    offload_bytes: int
    encoded_bytes: int
    output: torch.Tensor | None = None
    latency_s: float = 0.0
    cloud_s: float = 0.0
    cloud_layers: list[float] = field(default_factory=list)
    local_layers: list[float] = field(default_factory=list)
    sent_bytes: int = 0
    response_bytes: int = 0
    deadline_s: float = 0.0
    fallback: str = ""
