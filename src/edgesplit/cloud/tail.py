"""The one path by which a request runs a tail, shared by ``/v2/.../infer`` and ``/offload``.

``run_tail_request`` reads the body within the server-wide budget, takes a pending slot, decodes
the body (on a worker thread when it is large), runs the tail through ``TailRunner.run`` and
counts what it received.
``TailRunner`` is the seam where tails meet threads: whatever schedules them (one by one, or in
batches through a ``Batcher``) lives behind ``run(model, split_point, tensors) -> TailResult``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch
from fastapi import Request

from edgesplit.cloud.body import held_body
from edgesplit.cloud.load import LoadMeter
from edgesplit.cloud.metrics import Metrics
from edgesplit.cloud.service import CloudService, TailResult
from edgesplit.errors import EdgesplitError, WireFormatError

if TYPE_CHECKING:
    from edgesplit.cloud.state import CloudState

log = logging.getLogger(__name__)
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


class Batcher(Protocol):
    """Runs a request's tail together with others (``batching.TailBatcher``, Serve's)."""

    async def run(self, model: str, split_point: int,
                  tensors: list[torch.Tensor]) -> TailResult: ...

    def close_all(self) -> None: ...


BatcherFactory = Callable[[CloudService, Callable[[Callable[[], Any]], Awaitable[Any]]], Batcher]


class TailRunner:
    """Runs tails on a bounded pool of threads so that the event loop never blocks, one by
    one or through a ``batcher``, and meters the load (``load.LoadMeter``) as it goes."""

    def __init__(self, service: CloudService, workers: int, metrics: Metrics,
                 batcher: BatcherFactory | None = None) -> None:
        self.service = service
        self.metrics = metrics
        # A plain executor: the loop-to-thread hop is ~80 µs against anyio's ~130 µs.
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tail")
        self.meter = LoadMeter(slots=workers)
        self.batcher = batcher(service, self.in_worker) if batcher else None

    async def in_worker(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    async def run(self, model: str, split_point: int, tensors: list[torch.Tensor]) -> TailResult:
        with self.meter.holding(model, split_point):
            if self.batcher is not None and self.service.served(model).batching:
                result = await self.batcher.run(model, split_point, tensors)
            else:
                result = await self._alone(model, split_point, tensors)
            self.meter.observe(model, split_point, result.compute_s / result.batch_size)
            load = self.meter.parameters(model, split_point)  # while this one still counts
        self.metrics.tail_seconds.labels(model, str(split_point)).observe(result.compute_s)
        return replace(result, load=load)

    async def _alone(self, model: str, split_point: int,
                     tensors: list[torch.Tensor]) -> TailResult:
        submitted = time.perf_counter()

        def work() -> TailResult:
            started = time.perf_counter()
            result = self.service.run(model, split_point, tensors)
            return replace(result, queue_s=started - submitted)

        return await self.in_worker(work)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close_all()
        self.pool.shutdown(wait=True)


async def run_tail_request(request: Request, cloud: CloudState,
                           decode: Callable[[bytes], TailCall[T]],
                           body_limit: int, what: str = "request body") -> TailAnswer[T]:
    """Admission, body, decoding and the tail of one request; authentication came before.

    The pending slot is taken only once the whole body is in (and matched its signature), so a
    slow or unauthenticated upload cannot hold one; the body's bytes count in the server-wide
    budget meanwhile.
    """
    runner = cloud.tails
    cloud.admission.check()  # a full server says so before the body is sent
    async with held_body(request, cloud.budget, body_limit, what) as body:
        received = time.perf_counter()
        with cloud.admission:
            if len(body) <= INLINE_DECODE_BYTES:
                call = decoded(decode, body)
            else:
                call = await runner.in_worker(lambda: decoded(decode, body))
            result = await runner.run(call.model, call.split_point, call.tensors)
        cloud.metrics.received_bytes.labels(call.model).inc(len(body))
    return TailAnswer(call, result, time.perf_counter() - received)


def decoded(decode: Callable[[bytes], TailCall[T]], body: bytes) -> TailCall[T]:
    """``decode(body)``; whatever a decoder raises on bad bytes is the client's 400, not a 500."""
    try:
        return decode(body)
    except EdgesplitError:
        raise
    except (ValueError, TypeError, OverflowError, IndexError, KeyError, MemoryError,
            RecursionError) as exc:
        log.warning("a decoder raised %s on a request body", type(exc).__name__, exc_info=True)
        raise WireFormatError(f"the request body cannot be decoded: {exc}"[:300]) from exc
