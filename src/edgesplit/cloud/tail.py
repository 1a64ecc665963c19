"""The one path by which a request runs a tail, shared by ``/v2/.../infer`` and ``/offload``.

``run_tail_request`` takes a pending slot, reads the body, decodes it (on a worker thread when
it is large), runs the tail through ``TailRunner.run`` and counts what it received.
``TailRunner`` is the seam where tails meet threads: whatever schedules them (one by one today)
lives behind ``run(model, split_point, tensors) -> TailResult``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import torch
from fastapi import Request

from edgesplit.cloud.metrics import Metrics
from edgesplit.cloud.service import CloudService, TailResult

if TYPE_CHECKING:
    from edgesplit.cloud.state import CloudState

T = TypeVar("T")
# Bodies up to this size are decoded on the event loop (tens of microseconds); larger ones on a
# worker, so that a big JSON body cannot stall every other connection.
INLINE_DECODE_BYTES = 64 * 1024


@dataclass(frozen=True)
class TailCall(Generic[T]):
    """A decoded request: what it asked for (``request``) and the tail it needs run."""

    request: T
    model: str
    split_point: int
    tensors: list[torch.Tensor]


@dataclass(frozen=True)
class TailAnswer(Generic[T]):
    call: TailCall[T]
    result: TailResult
    cloud_s: float  # receipt of the whole body to the result (thesis equation 3.2)


class TailRunner:
    """Runs tails on a bounded pool of threads so that the event loop never blocks."""

    def __init__(self, service: CloudService, workers: int, metrics: Metrics) -> None:
        self.service = service
        self.metrics = metrics
        # A plain executor: the loop-to-thread hop is ~80 µs against anyio's ~130 µs.
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tail")

    async def in_worker(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    async def run(self, model: str, split_point: int, tensors: list[torch.Tensor]) -> TailResult:
        submitted = time.perf_counter()

        def work() -> TailResult:
            started = time.perf_counter()
            result = self.service.run(model, split_point, tensors)
            return TailResult(result.outputs, result.layer_times_s, result.compute_s,
                              queue_s=started - submitted)

        result = await self.in_worker(work)
        self.metrics.tail_seconds.labels(model, str(split_point)).observe(result.compute_s)
        return result

    def close(self) -> None:
        self.pool.shutdown(wait=True)


async def run_tail_request(request: Request, cloud: CloudState,
                           decode: Callable[[bytes], TailCall[T]]) -> TailAnswer[T]:
    """Admission, body, decoding and the tail of one request; authentication came before."""
    runner = cloud.tails
    with cloud.admission:
        body = await request.body()
        received = time.perf_counter()
        if len(body) <= INLINE_DECODE_BYTES:
            call = decode(body)
        else:
            call = await runner.in_worker(lambda: decode(body))
        result = await runner.run(call.model, call.split_point, call.tensors)
    cloud.metrics.received_bytes.labels(call.model).inc(len(body))
    return TailAnswer(call, result, time.perf_counter() - received)
