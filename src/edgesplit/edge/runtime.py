"""The edge runtime: runs inferences with the sensors, planner, model, client and log it is given.

For every inference it reads the clock and its bandwidth and RTT estimates, re-plans when due
(timer or a condition past its threshold, with hysteresis), runs the head, offloads what crosses
the cut over one kept-alive connection, and logs predicted against measured latencies (thesis
equations 3.1 to 3.4). What it measures flows back: its own layer times and the cloud's, the bytes
each codec produced and the uplink's speed and delay. If the cloud is down, refuses, or misses the
deadline derived from the plan, the edge finishes the network itself: no inference is lost. It
checks on the cloud every few seconds and resumes offloading when it answers. A refusal of one
request (400, 413, 422) is no outage: that inference finishes on the edge, the split point is
not planned again, and the cloud stays in use at the others.

The runtime builds nothing itself: ``edgesplit.edge.factory.build_runtime`` makes its parts from
options (the command line and the demo use it).

>>> from edgesplit.edge.factory import EdgeOptions, build_runtime
>>> from edgesplit.core.zoo import sample_input
>>> with build_runtime(EdgeOptions("mnist_cnn")) as edge:   # no cloud: all on the edge
...     result = edge.infer(sample_input("mnist_cnn"))
>>> result.measurement.finished, result.measurement.top1_class
('edge', 2)
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from edgesplit.core.planning import Candidate, Planner, SplitPlan
from edgesplit.core.predictors import Conditions
from edgesplit.core.rescheduling import (
    ReschedulePolicy,
    Rescheduler,
    noise_hysteresis,
    with_hysteresis,
)
from edgesplit.core.splitting import SplitModel, top1, torch_dtype
from edgesplit.core.uplink import LinkEstimator
from edgesplit.edge.client import AnswerTimeout, CloudReply, Expected
from edgesplit.edge.engines import Engine, TorchEngine
from edgesplit.edge.measurements import Measurement, MeasurementLog
from edgesplit.edge.records import (
    CloudPart,
    Context,
    Ran,
    layer_rows,
    local_candidate,
    measurement_of,
)
from edgesplit.edge.sensors import ClockSensor, Timebase
from edgesplit.errors import (
    CloudRefused,
    CloudUnavailable,
    InvalidArgument,
    ModelVersionMismatch,
    OffloadTimeout,
)
from edgesplit.models.digest import model_digest
from edgesplit.models.names import PROGRAM_SUFFIX
from edgesplit.wire.codecs import (
    TORCH_TO_DATATYPE,
    EncodedTensor,
    decode_tensor,
    encode_tensor,
    parse_codec,
)

log = logging.getLogger(__name__)


class Cloud(Protocol):
    """What the runtime asks of the cloud: ``edgesplit.edge.client.CloudClient`` (over HTTP, or
    over any httpx transport it is given), or anything that answers the same way."""

    base_url: str

    def model_metadata(self, model: str, deadline_s: float = ...) -> tuple[int, Any]: ...

    def ping(self, deadline_s: float = ...) -> float: ...

    def ready(self, deadline_s: float = ...) -> None: ...

    def probe(self, nbytes: int, deadline_s: float) -> float: ...

    def infer(self, model: str, split_point: int, tensors: Sequence[EncodedTensor],
              deadline_s: float, request_id: str | None = None, *,
              expect: Expected | None = None, model_digest: str | None = None,
              version: str | None = None) -> CloudReply: ...

    def close(self) -> None: ...


LATEST = ""
"""The cloud's latest version of the model holds the edge's weights: its unversioned route (no
version is named "")."""


def check_cloud(client: Cloud, model: str, split_points: int,
                source: str | None = None) -> str | None:
    """Ask the cloud about ``model`` before relying on it (``edge run`` asks before it profiles).

    A cloud that refuses this edge's credentials, does not serve the model, or serves a
    different model under its name (one with a split point beyond this edge's ``split_points``)
    is a configuration mistake: ``InvalidArgument``. A cloud that cannot be reached now may
    come up later: the reason is returned (the edge runs locally meanwhile). None when all is
    well. ``source``, the file ``model`` was read from, is named when the cloud does not serve
    that name.
    """
    try:
        status, body = client.model_metadata(model)
    except CloudUnavailable as exc:
        return str(exc)
    if status in (401, 403):
        raise InvalidArgument(f"the cloud refused this edge's credentials ({status}: {body}); "
                              "check --token or --hmac-key-id/--hmac-key-file")
    if status == 404:
        raise InvalidArgument(f"the cloud at {client.base_url} does not serve {model!r} ({body})"
                              + _named_after_file(source, model))
    if status >= 400:
        return f"the cloud answered {status}: {body}"
    # The cloud lists only the split points it runs (a repository's config.toml may allow a
    # few), so their number says nothing; one this edge's model lacks does. Other weights under
    # the same split points are the digest's to find (409 at the first offload).
    listed = [point.get("split_point")
              for point in (body or {}).get("parameters", {}).get("split_points", [])]
    foreign = [sp for sp in listed if not (isinstance(sp, int) and 0 <= sp < split_points)]
    if foreign:
        raise InvalidArgument(f"the cloud's {model} has split point {foreign[0]}, this edge's "
                              f"only 0 to {split_points - 1}: they are not the same model")
    return None


def _named_after_file(source: str | None, model: str) -> str:
    """Why the edge asked for ``model``: a program file is named after itself, so a file copied
    from a model repository (``my_net/3/model.pt2``) asks for ``model``."""
    if source is None or not source.endswith(PROGRAM_SUFFIX):
        return ""
    return (f"; the edge names {source} {model!r}, after its file: copy it to "
            f"NAME{PROGRAM_SUFFIX}, NAME as the cloud serves it")


@dataclass(frozen=True)
class InferenceResult:
    output: Any  # what the model returns: a tensor, or a tuple, list or dict of them
    measurement: Measurement


@dataclass(frozen=True)
class Timing:
    """How long the edge waits for the cloud, and how often it checks on it.

    An offload's deadline is ``deadline_factor`` times the predicted network and cloud time, at
    least ``min_deadline_s``; after a failure the edge checks the cloud again every ``retry_s``;
    between inferences it pings every ``ping_interval_s`` and, in idle time, sends
    ``probe_bytes`` every ``probe_interval_s`` to measure the uplink. When ``stale_after``
    inferences in a row told it nothing of the bandwidth (their payloads too small) and a ten
    times faster link would change the plan, it sends a probe (at most ``probe_bytes``) before
    planning, so a link that recovers is found; each probe that finds the link as estimated
    doubles that count, up to ``max_stale_after`` (2: no backing off, a recovery is found
    within three inferences; more: fewer probes, found later).
    """

    deadline_factor: float = 3.0
    min_deadline_s: float = 1.0
    retry_s: float = 2.0
    probe_bytes: int = 64 * 1024
    probe_interval_s: float = 15.0
    ping_interval_s: float = 3.0
    stale_after: int = 2
    max_stale_after: int = 2

    def __post_init__(self) -> None:
        if self.deadline_factor < 1 or self.min_deadline_s <= 0 or self.retry_s <= 0:
            raise InvalidArgument("deadline factor must be at least 1, minimum deadline and "
                                  "retry interval positive")
        if not 1 <= self.stale_after <= self.max_stale_after:
            raise InvalidArgument("stale_after must be at least 1 and at most max_stale_after")

    def deadline_s(self, chosen: Candidate) -> float:
        return max(self.min_deadline_s, self.deadline_factor * (chosen.comm_s + chosen.cloud_s))


@dataclass
class Probing:
    """What measuring the link cost beyond the inferences: probes sent, their bytes and the
    seconds spent on them (a timeout's checks included)."""

    probes: int = 0
    bytes: int = 0
    seconds: float = 0.0


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
            if self.inputs is None:
                raise InvalidArgument("lossy codecs need calibration inputs to check the "
                                      "model's answers against")
            if self._expected is None:
                self._expected = top1(self.split(self.inputs))
            sent = self.split.head(self.inputs, split_point)
            received = []
            for tensor in sent:
                encoded = encode_tensor(tensor, parsed)
                received.append(decode_tensor(encoded.payload, encoded.shape, encoded.datatype,
                                              encoded.parameters).to(tensor.dtype))
            output = self.split.tail(received, split_point)
            self._verdicts[key] = bool(torch.equal(top1(output), self._expected))
            log.info("codec %s at split point %d %s the top-1 answers", codec, split_point,
                     "keeps" if self._verdicts[key] else "changes")
        return self._verdicts[key]


class EdgeRuntime:
    """Runs one model split between this edge and a cloud, re-planning as conditions change.

    It is given its parts: the ``split`` model, a ``planner`` for it (its predictor learns from
    every inference), the ``client`` of the cloud (None: everything runs on the edge), the
    ``guard`` that vets lossy codecs, the ``clock`` and ``link`` sensors, when to re-plan
    (``reschedule``), the measurement ``log`` and the ``timing`` of deadlines and checks.
    ``timebase`` is every time it reads: the pace of re-planning and re-checks, the stopwatch,
    sleeping and the log's timestamps (tests pass their own).
    ``load_aware``: plan with the wait the cloud reported in its last answer (a busy cloud
    pushes the split toward the edge); False plans as if the cloud were always idle.
    ``engine`` runs the edge's layers (``edge.engines``; default: torch, the split itself).
    Use ``edgesplit.edge.factory.build_runtime`` to make all of them from options.
    """

    def __init__(self, split: SplitModel, planner: Planner, *, client: Cloud | None = None,
                 guard: CodecGuard | None = None, clock: ClockSensor, link: LinkEstimator,
                 reschedule: ReschedulePolicy | None = None, log: MeasurementLog | None = None,
                 timing: Timing | None = None, timebase: Timebase | None = None,
                 load_aware: bool = True, engine: Engine | None = None) -> None:
        if len(planner.layers) != split.n_layers + 1:
            raise InvalidArgument(f"the planner knows {len(planner.layers) - 1} layers, the "
                                  f"model has {split.n_layers}: plan this model")
        self.split = split
        self.engine = engine or TorchEngine(split)
        self.planner = planner
        self.client = client
        self.guard = guard or CodecGuard(split, None)
        self.clock = clock
        self.link = link
        self.policy = reschedule or ReschedulePolicy()
        self.rescheduler = Rescheduler(self.policy)
        self.log = log
        self.timing = timing or Timing()
        self.time = timebase or Timebase()
        self._now = self.time.monotonic
        self._started = self._now()
        self.run_id = f"{self.time.wall():%Y%m%dT%H%M%S}-{os.getpid()}"
        self._layer_names = tuple(layer.name for layer in split.layers)
        self._seq = 0
        self._excluded: set[tuple[int, str]] = set()
        self.refused: set[int] = set()  # split points the cloud refused a request at
        self.plan: SplitPlan | None = None
        self.cloud_down_reason: str | None = None if client else "no cloud configured"
        self._retry_at = 0.0
        self._last_probe = self._last_ping = -float("inf")
        self.load_aware = load_aware
        self.cloud_wait_s = 0.0  # the cloud's expected wait, from its last answer
        self.probing = Probing()
        self._quiet = 0  # inferences in a row whose transfers told nothing of the bandwidth
        self._stale_after = self.timing.stale_after  # grows while probes find nothing new
        self._slow_link = False  # a timeout was the link's: re-plan at the next inference
        self._timed_out = False  # the last offload timed out
        # Sent with every offload so that a cloud holding other weights refuses (409) rather
        # than answers wrongly; hashing the weights once is worth it only with a cloud.
        self.digest = model_digest(split) if client else None
        self.version_skew: str | None = None  # the cloud's last refusal of this model version
        # The cloud's version of the model that holds these weights, where its latest does not
        # (a rolling upgrade): offloads go to it while the cloud serves it.
        self.cloud_version: str | None = None
        self._next_lookup = -float("inf")  # when the cloud's versions may be looked up again

    @property
    def model(self) -> str:
        return self.planner.model

    # -- the loop ---------------------------------------------------------------------------

    def infer(self, x: torch.Tensor, split_point: int | None = None) -> InferenceResult:
        """One inference: plan if due, split, offload (or finish locally), learn, log.

        ``split_point`` forces the split: no planning (the plan's prediction for that split
        point is still logged), everything else measured and logged as usual."""
        if split_point is None and self._stale():
            self._probe_stale()
        now = self._now()
        conditions = self.conditions()
        if split_point is not None:
            plan, replan = self._forced(conditions, split_point), "forced"
        else:
            # A refused plan cannot be used at all, so its reason comes before the timer's.
            replan = ("refused" if self.plan and self.plan.split_point in self.refused else
                      self.rescheduler.due(now, conditions) or (
                          "slow link" if self._slow_link else ""))
            self._slow_link = False
            if replan:
                self.plan = self._replan(conditions)
                self.rescheduler.planned(now, conditions)
            assert self.plan is not None
            plan = self.plan
        self._maybe_reconnect(now)
        if self.cloud_down_reason is not None:
            output, ran = self._run_locally(x, f"offline: {self.cloud_down_reason}")
        elif replan != "forced" and plan.split_point in self.refused:
            output, ran = self._run_locally(x, "the cloud refused every split point")
        else:
            output, ran = self._offload(x, plan)
        return self._finish(output, ran, conditions, replan, plan)

    def run(self, inputs: Iterable[torch.Tensor], *, count: int | None = None,
            duration_s: float | None = None, interval_s: float = 0.0,
            on_result: Callable[[InferenceResult], None] | None = None,
            split_point: int | None = None) -> list[InferenceResult]:
        """Infer over ``inputs``: once each (read lazily), or cycled until ``count``
        inferences or ``duration_s`` seconds (``split_point`` forces the split of each).

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
            result = self.infer(x, split_point)
            results.append(result)
            if on_result:
                on_result(result)
            self._between(slot, interval_s)
        return results

    def _between(self, slot: float, interval_s: float) -> None:
        if self._now() - self._last_ping >= self.timing.ping_interval_s:
            self.ping()
        if interval_s - (self._now() - slot) > 0.2:
            self.probe_bandwidth()
        idle = interval_s - (self._now() - slot)
        if idle > 0:
            self.time.sleep(idle)

    def conditions(self) -> Conditions:
        return Conditions(self.link.bandwidth_kbps, self.link.rtt_ms, self.clock.read_ghz(),
                          cloud_wait_s=self.cloud_wait_s if self.load_aware else 0.0)

    def check_cloud(self) -> str | None:
        """``check_cloud`` for this runtime's client and model (None without a cloud)."""
        if self.client is None:
            return None
        return check_cloud(self.client, self.model, self.split.n_layers + 1)

    def ping(self) -> None:
        """One round trip to the cloud: a clean RTT sample (and a liveness check)."""
        if self.client is None or self.cloud_down_reason is not None:
            return
        self._last_ping = self._now()
        try:
            self.link.observe_rtt(self.client.ping(deadline_s=self.timing.min_deadline_s))
        except CloudUnavailable as exc:
            self._mark_down(str(exc))

    def probe_bandwidth(self) -> None:
        """Send ``probe_bytes`` to the cloud when the last probe is old enough (idle time)."""
        timing = self.timing
        if (self.client is None or self.cloud_down_reason is not None
                or self._now() - self._last_probe < timing.probe_interval_s):
            return
        self._last_probe = self._now()
        expected = timing.probe_bytes * 8 / (self.link.bandwidth_kbps * 1000)
        try:
            seconds = self.client.probe(timing.probe_bytes, deadline_s=max(
                timing.min_deadline_s, timing.deadline_factor * expected))
        except CloudUnavailable as exc:
            self._mark_down(str(exc))
            return
        self._count(timing.probe_bytes, seconds)
        self.link.observe_transfer(timing.probe_bytes, seconds)

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
            hysteresis = noise_hysteresis(self.policy, self.link.noise)
            plan = self._without_refused(with_hysteresis(plan, current, hysteresis))
            if self.guard.allows(plan.split_point, plan.codec):
                return plan
            self._excluded.add((plan.split_point, plan.codec))

    def _without_refused(self, plan: SplitPlan) -> SplitPlan:
        """``plan``, or, where the cloud refused its split point, the first split point it did
        not refuse on the Pareto front, else the fastest predicted (the plan unchanged if the
        cloud refused them all: the edge then runs alone)."""
        if plan.split_point not in self.refused:
            return plan
        by_speed = sorted(range(len(plan.latency_s)), key=plan.latency_s.__getitem__)
        allowed = [sp for sp in (*plan.pareto, *by_speed) if sp not in self.refused]
        return replace(plan, split_point=allowed[0]) if allowed else plan

    def _skewed(self, reason: str) -> None:
        """The cloud's latest version of this model holds other weights (409), or the version
        this edge offloaded to is gone (404): this inference finishes here. If the cloud still
        serves a version with this edge's weights, the next offloads go to that version (old
        edges keep offloading through a rolling upgrade). If not, the cloud is not down (it may
        be given this version at any time): said once, and the next offload tries again. The
        versions are looked up after the pinned version's refusal, else at most once per retry
        interval (not at every inference while none holds these weights)."""
        pinned, self.cloud_version = self.cloud_version, None
        now = self._now()
        if pinned is not None or now >= self._next_lookup:
            found = self._version_with_these_weights()
            if found == LATEST:
                log.info("the cloud's latest %s holds this edge's weights again", self.model)
                return
            if found is not None and found != pinned:
                self.cloud_version = found
                log.warning("the cloud's latest %s holds other weights: offloading to its "
                            "version %s, which holds this edge's", self.model, found)
                return
            self._next_lookup = now + self.timing.retry_s
        if self.version_skew is None:
            log.warning("finishing on the edge while the cloud serves another version of %s: "
                        "%s", self.model, reason)
        self.version_skew = reason

    def _version_with_these_weights(self) -> str | None:
        """The newest ready version of the model in the cloud whose digest is this edge's
        (from its metadata); ``LATEST`` where the latest is one, None where none is (or the
        metadata cannot be had)."""
        assert self.client is not None
        began = self._now()
        try:
            status, body = self.client.model_metadata(self.model,
                                                      deadline_s=self.timing.min_deadline_s)
        except CloudUnavailable:
            return None
        finally:
            self._count(0, self._now() - began)
        parameters = body.get("parameters") if status == 200 and isinstance(body, dict) else None
        if not isinstance(parameters, dict):
            return None
        if parameters.get("model_digest") == self.digest:
            return LATEST
        rows = parameters.get("model_versions")
        held = [str(row.get("version")) for row in (rows if isinstance(rows, list) else [])
                if isinstance(row, dict) and row.get("state") == "READY"
                and row.get("digest") == self.digest]
        return max(held, key=lambda v: (int(v) if v.isdigit() else -1, v)) if held else None

    def _refuse(self, split_point: int, reason: str) -> None:
        """The cloud refused a request at ``split_point``: plan without it from now on."""
        if split_point not in self.refused:
            log.warning("split point %d of %s is not used again: %s", split_point, self.model,
                        reason)
        self.refused.add(split_point)

    def _forced(self, conditions: Conditions, split_point: int) -> SplitPlan:
        n = self.split.n_layers
        if not 0 <= split_point <= n:
            raise InvalidArgument(f"split point {split_point} is out of range for {self.model}: "
                                  f"expected 0..{n}")
        while True:
            plan = replace(self.planner.plan(conditions, frozenset(self._excluded)),
                           split_point=split_point)
            if self.guard.allows(split_point, plan.codec):
                return plan
            self._excluded.add((split_point, plan.codec))

    def _offload(self, x: torch.Tensor, plan: SplitPlan) -> tuple[Any, Ran]:
        sp, codec = plan.split_point, parse_codec(plan.codec)
        edge_layers: list[float] = []
        stopwatch = self.time.stopwatch
        self.engine.prepare(sp)  # an engine's first use of a split point is not head time
        began = stopwatch()
        sent = self.engine.head(x, sp, edge_layers)
        encode_began = stopwatch()
        encoded = [encode_tensor(t, codec, spec.name)
                   for t, spec in zip(sent, self.split.split_points[sp].tensors, strict=True)]
        now = stopwatch()
        deadline = self.timing.deadline_s(plan.chosen)
        head = Ran(split_point=sp, codec=plan.codec, edge_layers_s=tuple(edge_layers),
                   edge_s=now - began, codec_s=now - encode_began,
                   offload_bytes=sum(t.numel() * t.element_size() for t in sent),
                   encoded_bytes=sum(len(e.payload) for e in encoded), deadline_s=deadline)
        assert self.client is not None
        try:
            reply = self.client.infer(self.model, sp, encoded, deadline,
                                      request_id=str(self._seq + 1),
                                      expect=self._expected(x.shape[0], sp),
                                      model_digest=self.digest, version=self.cloud_version)
        except CloudUnavailable as exc:
            tail_layers: list[float] = []
            output = self.split.tail(sent, sp, tail_layers)
            ran = replace(head, edge_layers_s=head.edge_layers_s + tuple(tail_layers),
                          latency_s=stopwatch() - began, fallback=str(exc))
            self._failed(exc, sp, head.encoded_bytes, deadline)
            return output, ran
        latency_s = stopwatch() - began
        network_s = reply.round_trip_s - reply.cloud_s
        self._timed_out = False
        self.version_skew = None  # the cloud holds this version again: a new skew is said anew
        self._quiet = 0 if self.link.informative(reply.request_bytes) else self._quiet + 1
        self.link.observe_transfer(reply.request_bytes, network_s)
        self.cloud_wait_s = reply.expected_wait_s
        cloud = CloudPart(reply.cloud_s, tuple(reply.layer_times_s), reply.request_bytes,
                          reply.response_bytes)
        return self.split.pack_outputs(reply.outputs), replace(head, latency_s=latency_s,
                                                               cloud=cloud)

    def _expected(self, batch: int, sp: int) -> Expected:
        """What the cloud must answer for a batch cut at ``sp``: the model's outputs for this
        batch, each layer after the cut timed."""
        n = self.split.n_layers
        specs = self.split.outputs
        outputs = tuple((None if spec.free else spec.batched_shape(batch),
                         TORCH_TO_DATATYPE[torch_dtype(spec.dtype)]) for spec in specs)
        return Expected(outputs, n - sp, sum(s.max_elements(batch) for s in specs if s.free))

    def _run_locally(self, x: torch.Tensor, reason: str) -> tuple[Any, Ran]:
        layers: list[float] = []
        self.engine.prepare(self.split.n_layers)
        began = self.time.stopwatch()
        output = self.engine.run(x, layers)
        elapsed = self.time.stopwatch() - began
        return output, Ran(split_point=self.split.n_layers, codec="raw",
                           edge_layers_s=tuple(layers), edge_s=elapsed, codec_s=0.0,
                           offload_bytes=0, encoded_bytes=0, latency_s=elapsed, fallback=reason)

    def _finish(self, output: Any, ran: Ran, conditions: Conditions,
                replan: str, plan: SplitPlan) -> InferenceResult:
        """Learn from what ran, then log it and hand it back."""
        self._seq += 1
        self._learn(ran, conditions)
        context = Context(seq=self._seq, run=self.run_id,
                          time=self.time.wall().isoformat(timespec="milliseconds"),
                          elapsed_s=self._now() - self._started, model=self.model,
                          predictor=self.planner.predictor.name,
                          objective=self.planner.objective, conditions=conditions,
                          replan=replan)
        measurement = measurement_of(ran, context, self._predicted(ran, conditions, plan),
                                     int(top1(output)[0]))
        if self.log:
            self.log.append(measurement, layer_rows(ran, context, self._layer_names))
        return InferenceResult(output, measurement)

    def _predicted(self, ran: Ran, conditions: Conditions, plan: SplitPlan) -> Candidate:
        """The prediction of what ran: the plan's split when the cloud finished it, else the
        whole model on the edge (no network time that never happened)."""
        if ran.cloud is not None:
            return plan.candidate(ran.split_point)
        whole = self.planner.predictor.predict(conditions, "raw").edge_s[-1]
        return local_candidate(plan, whole)

    def _learn(self, ran: Ran, conditions: Conditions) -> None:
        cloud = ran.cloud
        self.planner.predictor.partial_fit(
            clock_ghz=conditions.clock_ghz, edge_layer_s=dict(enumerate(ran.edge_layers_s, 1)),
            cloud_layer_s={ran.split_point + i: t for i, t in
                           enumerate(cloud.layer_times_s, 1)} if cloud else None,
            codec=ran.codec if cloud else None, split_point=ran.split_point,
            encoded_bytes=ran.encoded_bytes, codec_s=ran.codec_s)

    def _failed(self, exc: CloudUnavailable, sp: int, nbytes: int, waited_s: float) -> None:
        """After a failed offload (its inference already finished on the edge): a refusal
        rules out the split point; a timeout before the answer began is checked for a slow
        link; anything else (and a timeout that was the cloud's) is an outage. A cut, an error
        answer or an answer too slow to arrive says nothing of the uplink's speed, and is not
        learned from. Another version of the model in the cloud (409, or 404 on the route of
        the version this edge offloaded to) is neither: see ``_skewed``."""
        if isinstance(exc, ModelVersionMismatch):
            self._skewed(str(exc))
        elif isinstance(exc, CloudRefused):
            self._refuse(sp, str(exc))
        elif not (isinstance(exc, OffloadTimeout) and not isinstance(exc, AnswerTimeout)
                  and self._link_was_slow(nbytes, waited_s)):
            self._mark_down(str(exc))
        self._timed_out = isinstance(exc, OffloadTimeout)

    def _link_was_slow(self, nbytes: int, waited_s: float) -> bool:
        """Whether the link, not the cloud, kept ``nbytes`` from being answered within
        ``waited_s``. The cloud must answer that it is ready; a cloud that does not (stopped,
        stuck, dripping its answers) is an outage, and teaches nothing of the link. If it
        does, the timeout bounds the bandwidth (``LinkEstimator.observe_timeout``: at most
        ``nbytes`` in that time) and the next inference re-plans on it. A second timeout in a
        row, at a plan made for the first, is an outage all the same (a cloud that answers its
        readiness but not its work), re-checked with backoff; the bound stands, so the cloud
        is tried again at a split that fits it."""
        assert self.client is not None
        began = self._now()
        try:
            self.client.ready(deadline_s=self.timing.min_deadline_s)
        except CloudUnavailable:
            return False
        finally:
            self._count(0, self._now() - began)
        if not self.link.observe_timeout(nbytes, waited_s) or self._timed_out:
            return False  # the estimate expected it to be this slow, or it is the second
        log.warning("the offload of %d bytes timed out on a slow link (now at most %.0f kbit/s"
                    "): re-planning", nbytes, self.link.bandwidth_kbps)
        self._slow_link = True
        return True

    def _stale(self) -> bool:
        """Whether the bandwidth estimate is stale and worth a probe: the last ``stale_after``
        inferences (doubled after each probe that found nothing new) told nothing of it, and a
        link ten or a hundred times faster would change the plan."""
        if (self.client is None or self.cloud_down_reason is not None or self.plan is None
                or self._quiet < self._stale_after):
            return False
        conditions = self.conditions()
        current = self.plan.split_point
        for factor in (10, 100):  # the policy's own hysteresis: the noise is the estimate's
            faster = replace(conditions, bandwidth_kbps=conditions.bandwidth_kbps * factor)
            plan = self.planner.plan(faster, frozenset(self._excluded))
            if with_hysteresis(plan, current, self.policy.hysteresis).split_point != current:
                return True
        return False

    def _probe_stale(self) -> None:
        """Probe the stale estimate; back off while probes find the link as estimated."""
        changes = self.link.changes
        self._measure(self._probe_size())
        found = self.link.changes > changes or self._slow_link
        self._stale_after = (self.timing.stale_after if found
                             else min(2 * self._stale_after, self.timing.max_stale_after))

    def _probe_size(self) -> int:
        """A probe whose payload takes two round trips (at least 0.1 s) at the estimate: a
        ten times faster link answers it in 0.4 of the time predicted, past the estimator's
        change ratio even with some tens of ms of noise."""
        payload_s = max(2 * self.link.rtt_ms / 1000, 0.1)
        return max(1024, min(self.timing.probe_bytes, self.link.bytes_for(payload_s)))

    def _measure(self, nbytes: int) -> None:
        """Send ``nbytes`` to the cloud's probe and learn the link from it: a probe that times
        out bounds the bandwidth, any other failure is an outage."""
        assert self.client is not None
        deadline = max(self.timing.min_deadline_s,
                       self.timing.deadline_factor * self.link.predict_s(nbytes))
        began = self._now()
        self._quiet = 0
        try:
            seconds = self.client.probe(nbytes, deadline_s=deadline)
        except OffloadTimeout:  # the link is slower than the estimate: bounded, and re-planned
            self._count(nbytes, self._now() - began)
            self._slow_link = self.link.observe_timeout(nbytes, deadline)
            return
        except CloudUnavailable as exc:
            self._count(nbytes, self._now() - began)
            self._mark_down(str(exc))
            return
        self._count(nbytes, seconds)
        self.link.observe_probe(nbytes, seconds)
        log.info("probed a stale estimate: %d bytes in %.3f s, now %.0f kbit/s (%d probes, "
                 "%d bytes, %.2f s so far)", nbytes, seconds, self.link.bandwidth_kbps,
                 self.probing.probes, self.probing.bytes, self.probing.seconds)

    def _count(self, nbytes: int, seconds: float) -> None:
        self.probing.probes += 1
        self.probing.bytes += nbytes
        self.probing.seconds += seconds

    def _mark_down(self, reason: str) -> None:
        if self.cloud_down_reason is None:
            log.warning("finishing on the edge: %s", reason)
        self.cloud_down_reason = reason
        self._retry_at = self._now() + self.timing.retry_s

    def _maybe_reconnect(self, now: float) -> None:
        """Once a re-check interval has passed, ask whether the cloud is ready (not merely
        alive: a cloud still loading its models would fail the offload)."""
        if self.client is None or self.cloud_down_reason is None or now < self._retry_at:
            return
        try:
            self.client.ready(deadline_s=self.timing.min_deadline_s)
        except CloudUnavailable as exc:
            self._mark_down(str(exc))
            return
        log.info("the cloud is ready again: offloading resumes")
        self.cloud_down_reason = None
