"""What one inference did, and the measurement and layer rows made of it (pure).

The runtime runs an inference and describes it in a ``Ran``: where it was cut, what the edge
timed, what crossed the wire and, when the cloud finished it, the cloud's part. Everything the
log and the user see is a function of that record and the context it ran in: no clocks, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgesplit.core.cost import cost_usd
from edgesplit.core.planning import Candidate, Objective, SplitPlan
from edgesplit.core.predictors import Conditions
from edgesplit.edge.measurements import LayerTime, Measurement


@dataclass(frozen=True)
class CloudPart:
    """The cloud's share of an inference it finished (its timings as the edge accepted them)."""

    cloud_s: float  # thesis equation 3.2, receipt to result
    layer_times_s: tuple[float, ...]  # layers split_point+1 .. N
    sent_bytes: int  # the request body
    response_bytes: int


@dataclass(frozen=True)
class Ran:
    """What happened to one inference: the facts its measurement is made of.

    ``edge_layers_s`` are the times of the layers the edge ran, from layer 1 on (the head, and
    after a fallback the tail too). Exactly one of ``cloud`` (the cloud finished it) and
    ``fallback`` (why the edge did) is set.
    """

    split_point: int  # where the plan cut it
    codec: str
    edge_layers_s: tuple[float, ...]
    edge_s: float  # head and encoding
    codec_s: float  # encoding alone
    offload_bytes: int  # raw size of what crossed the cut
    encoded_bytes: int  # after the codec
    latency_s: float = 0.0  # thesis equation 3.4: start to result
    deadline_s: float = 0.0  # how long the edge would wait for the cloud (0: it did not ask)
    cloud: CloudPart | None = None
    fallback: str = ""

    @property
    def finished(self) -> str:
        return "edge" if self.cloud is None else "cloud"


@dataclass(frozen=True)
class Context:
    """Where an inference ran: which one it was, under which objective and conditions."""

    seq: int
    run: str
    time: str  # ISO 8601, UTC
    elapsed_s: float
    model: str
    predictor: str
    objective: Objective
    conditions: Conditions
    replan: str  # why this inference re-planned, empty when it did not


def measured_times(ran: Ran) -> tuple[float, float, float]:
    """(edge, communication, cloud) seconds as measured; an inference the edge finished spent
    all its time on the edge, whatever it tried first."""
    if ran.cloud is None:
        return ran.latency_s, 0.0, 0.0
    edge_s, cloud_s = ran.edge_s, ran.cloud.cloud_s
    return edge_s, max(0.0, ran.latency_s - edge_s - cloud_s), cloud_s


def local_candidate(plan: SplitPlan, edge_s: float) -> Candidate:
    """The prediction of the whole model on the edge, taking ``edge_s``: nothing sent."""
    n = len(plan.layers) - 1
    objective = plan.objective
    return Candidate(n, plan.layers[n], edge_s, 0.0, 0.0, edge_s,
                     cost_usd(edge_s, 0.0, 0, objective.edge, objective.prices), 0, "raw")


def measurement_of(ran: Ran, context: Context, predicted: Candidate,
                   top1_class: int) -> Measurement:
    """The log row of one inference. ``predicted`` is the prediction of what ran: the plan's
    candidate when the cloud finished it, the whole model on the edge when the edge did."""
    edge_s, comm_s, cloud_s = measured_times(ran)
    conditions, objective = context.conditions, context.objective
    sent_bytes = ran.cloud.sent_bytes if ran.cloud else 0
    response_bytes = ran.cloud.response_bytes if ran.cloud else 0
    response_s = response_bytes * 8 / (1000 * conditions.bandwidth_kbps)
    # Equation 3.3 subtracts the estimated half round trip and answer time; it is never
    # allowed below zero when those estimates run high.
    comm_thesis_s = max(0.0, comm_s - conditions.rtt_ms / 2000 - response_s)
    return Measurement(
        seq=context.seq, run=context.run, time=context.time,
        elapsed_s=round(context.elapsed_s, 6), model=context.model,
        strategy=str(objective.strategy), weight=objective.weight, edge=str(objective.edge),
        predictor=context.predictor, codec=ran.codec, split_point=ran.split_point,
        clock_ghz=conditions.clock_ghz, bandwidth_kbps=round(conditions.bandwidth_kbps, 3),
        rtt_ms=round(conditions.rtt_ms, 3), predicted_edge_s=predicted.edge_s,
        predicted_comm_s=predicted.comm_s, predicted_cloud_s=predicted.cloud_s,
        predicted_latency_s=predicted.latency_s, predicted_cost_usd=predicted.cost_usd,
        edge_s=edge_s, comm_s=comm_s, comm_thesis_s=comm_thesis_s, cloud_s=cloud_s,
        latency_s=ran.latency_s,
        cost_usd=cost_usd(edge_s, cloud_s, sent_bytes, objective.edge, objective.prices),
        offload_bytes=ran.offload_bytes, sent_bytes=sent_bytes, deadline_s=ran.deadline_s,
        finished=ran.finished, fallback=ran.fallback, replan=context.replan,
        top1_class=top1_class,
    )


def layer_rows(ran: Ran, context: Context, names: tuple[str, ...]) -> list[LayerTime]:
    """One row per layer timed, on either side (``names``: layer 1's name first)."""
    rows = [LayerTime(context.seq, context.run, "edge", i, names[i - 1], t)
            for i, t in enumerate(ran.edge_layers_s, 1)]
    if ran.cloud is not None:
        sp = ran.split_point
        rows += [LayerTime(context.seq, context.run, "cloud", sp + i, names[sp + i - 1], t)
                 for i, t in enumerate(ran.cloud.layer_times_s, 1) if sp + i <= len(names)]
    return rows
