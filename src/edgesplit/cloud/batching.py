"""Dynamic batching: tails of the same model and split point that arrive together run as one.

Adaptive, as Triton's dynamic batcher and Clipper's adaptive batching: a request that finds a
worker free runs at once, alone (it waits for nobody); requests that arrive while every worker
is busy queue, and those of the same model, split point and tensor shapes join one batch of up to
``max_batch_size`` rows (their batch dimensions added up). So batches grow with the queue and a
lone request pays nothing for batching. One refinement keeps busy clouds' batches full: clients
that send again as soon as they are answered (most do) arrive just after a batch ends, when the
worker is free again, so work-conserving dispatch alone splits them into half-full batches that
alternate. The batcher therefore remembers how many requests were inside at once while the last
batch ran (its *company*); a free worker whose next batch holds fewer rows than that holds it
for at most half the time this model's last batch took, or until the rows arrive. A lone client
has a company of one and never waits, and a request that comes later after the last batch
ended than a hold would last is not held either (its company would be back by then).
(Measured in docs/benchmarks.md: AlexNet's tail at 8 in flight went from 1.8x the thesis
design's throughput to 3.0x with the hold on two workers, 4.1x on one worker using both
cores.) ``wait_s`` above zero adds a wait for company even when a worker is free. Batches run
first come, first served by their oldest request: a batch that fills up never overtakes one
queued before it, so a due batch waits at most for the batches queued before it (and one
bounded hold), whatever other keys send. Every request is checked on its own before it joins
(dtype, NaN, batch limit: a bad one is refused alone and never reaches its batch-mates), and
answered on its own with its slice of the output, its own queueing time and the batch's compute
and layer times (what it really waited for). Requests whose decoded tensors differ in dtype or
in shape past the batch dimension never share a batch; codecs are undone before a request gets
here, so requests sent with different codecs whose tensors decode alike do. Batching pays where
a tail reads more weights than activations: AlexNet's fully connected tail reads 224 MB of
weights whatever the batch size.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch

from edgesplit.cloud.errors import NotFinite
from edgesplit.cloud.service import CloudService, TailResult
from edgesplit.core.splitting import SplitModel

log = logging.getLogger(__name__)

T = TypeVar("T")
InWorker = Callable[[Callable[[], T]], Awaitable[T]]
BatchKey = tuple[str, int, tuple[tuple[torch.dtype, tuple[int, ...]], ...]]


@dataclass
class Waiting:
    """One checked request waiting for its batch."""

    tensors: list[torch.Tensor]
    rows: int
    future: asyncio.Future[TailResult] | None
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Open:
    """A batch still taking requests. ``seq`` orders batches by their oldest request; ``ready``
    once it is full or its wait is over (then it runs as soon as a worker is free and its turn
    comes, taking in whatever arrives until then)."""

    seq: int
    items: list[Waiting] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None
    ready: bool = False
    held: bool = False  # a free worker held it once for company (never twice)
    hold: asyncio.TimerHandle | None = None


HOLD_SHARE = 0.5  # a free worker holds a short batch for at most this share of the last's time


class TailBatcher:
    """Gathers tails into batches and runs each batch once through ``in_worker``.

    A batch is ready when it is full or its wait (``wait_s``, none by default) is over, and
    ready batches run on the ``workers`` in the order of their oldest request. While every
    worker is busy, requests keep joining the ready batches, so a busy cloud runs fuller
    batches instead of a queue of small ones, and an idle one runs each request at once.
    """

    def __init__(self, service: CloudService, in_worker: InWorker[Any], max_batch_size: int,
                 wait_s: float = 0.0, workers: int = 1) -> None:
        self.service = service
        self.in_worker = in_worker
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._free = workers
        self._open: dict[BatchKey, _Open] = {}  # the batch of each key still taking requests
        self._ready: list[tuple[int, BatchKey, _Open]] = []  # a heap by ``seq``
        self._seq = itertools.count()
        self._running: set[asyncio.Task[None]] = set()
        self._inside = 0  # requests taken in and not yet answered
        self._peak = 0  # the most inside at once since the last batch started
        self._company = 1  # the peak while the last batch ran: what a free worker waits for
        self._running_rows = 0
        self._took: dict[BatchKey, float] = {}  # the last batch's time, by key
        self._ended = -math.inf  # when the last batch ended

    async def run(self, model: str, split_point: int, tensors: list[torch.Tensor]) -> TailResult:
        """The tail of one request, run in a batch with whatever arrives with it."""
        tensors = self.service.conform(model, split_point, tensors)  # refused alone
        rows = self.service.split(model).check_tensors(tensors, split_point)
        future: asyncio.Future[TailResult] = asyncio.get_running_loop().create_future()
        item = Waiting(tensors, rows, future)
        self._inside += 1
        self._peak = max(self._peak, self._inside)
        try:
            self._take(model, split_point, item)
            return await future
        finally:
            self._inside -= 1

    def _take(self, model: str, split_point: int, item: Waiting) -> None:
        """``item`` joins the open batch of its key (a new one when none is open or it would
        overflow), and whatever can run, runs."""
        tensors = item.tensors
        key = (model, split_point, tuple((t.dtype, tuple(t.shape[1:])) for t in tensors))
        batch = self._open.get(key)
        if batch is not None and batch.rows + item.rows > self.max_batch_size:
            self._seal(key)
            batch = None
        if batch is None:
            batch = self._open[key] = _Open(next(self._seq))
            if self.wait_s > 0:
                batch.timer = asyncio.get_running_loop().call_later(
                    self.wait_s, self._expire, key, batch)
            else:
                self._queue(key, batch)
        batch.items.append(item)
        batch.rows += item.rows
        if batch.rows >= self.max_batch_size:
            self._seal(key)
        self._dispatch()

    def close_all(self) -> None:
        """Seal every open batch (at shutdown: nothing is left waiting for a timer)."""
        for key in list(self._open):
            self._seal(key)
        for _, _, batch in self._ready:
            batch.held = True
            if batch.hold is not None:
                batch.hold.cancel()
                batch.hold = None
        self._dispatch()

    def _expire(self, key: BatchKey, batch: _Open) -> None:
        self._queue(key, batch)
        self._dispatch()

    def _queue(self, key: BatchKey, batch: _Open) -> None:
        """Put ``batch`` in line, in the place of its oldest request (once)."""
        if not batch.ready:
            batch.ready = True
            heapq.heappush(self._ready, (batch.seq, key, batch))

    def _seal(self, key: BatchKey) -> None:
        """No more requests join the open batch of ``key``; it is ready."""
        batch = self._open.pop(key)
        if batch.timer is not None:
            batch.timer.cancel()
        self._queue(key, batch)

    def _next(self) -> tuple[BatchKey, _Open] | None:
        if not self._ready or self._holding(*self._ready[0][1:]):
            return None
        _, key, batch = heapq.heappop(self._ready)
        if self._open.get(key) is batch:  # a ready batch that still took requests: no longer
            del self._open[key]
        return key, batch

    def _holding(self, key: BatchKey, batch: _Open) -> bool:
        """Whether a free worker holds ``batch``, the next in line, for company: while it
        has fewer rows than came together last time (less those running), once, for at most
        ``HOLD_SHARE`` of the time the key's last batch took, and only when the last batch
        ended less than that long ago (clients that send again at once are back by then)."""
        wanted = min(self.max_batch_size, self._company - self._running_rows)
        if batch.rows >= wanted or (batch.held and batch.hold is None):
            if batch.hold is not None:
                batch.hold.cancel()
                batch.hold = None
            return False
        if not batch.held:
            hold_s = HOLD_SHARE * self._took.get(key, 0.0)
            if hold_s <= 0 or time.perf_counter() - self._ended > hold_s:
                return False  # its company would have come back by now: a lone request
            batch.held = True
            batch.hold = asyncio.get_running_loop().call_later(hold_s, self._release, batch)
        return True

    def _release(self, batch: _Open) -> None:
        batch.hold = None
        self._dispatch()

    def _dispatch(self) -> None:
        while self._free > 0 and (ready := self._next()) is not None:
            key, batch = ready
            self._free -= 1
            self._running_rows += batch.rows
            self._company, self._peak = self._peak, self._inside
            task = asyncio.get_running_loop().create_task(self._execute(key, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, key: BatchKey, batch: _Open) -> None:
        model, split_point, _ = key
        items = batch.items
        began = time.perf_counter()
        try:
            results = await self.in_worker(
                lambda: run_together(self.service, model, split_point, items))
        except Exception as exc:  # a worker that cannot run at all: every request learns it
            results = [exc] * len(items)
        finally:
            self._ended = time.perf_counter()
            self._took[key] = self._ended - began
            self._free += 1
            self._running_rows -= batch.rows
            self._dispatch()
        for item, result in zip(items, results, strict=True):
            future = item.future
            if future is None or future.done():  # its client left
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def run_together(service: CloudService, model: str, split_point: int,
                 items: list[Waiting]) -> list[TailResult | Exception]:
    """One tail over every item's rows, split back per item; each item alone where the model
    cannot batch at this cut or the batch fails. On a worker thread."""
    started = time.perf_counter()
    if len(items) > 1 and batchable(service.split(model), split_point):
        try:
            return list(_batched(service, model, split_point, items, started))
        except Exception:  # then each request runs alone and fails, if at all, alone
            log.warning("a batch of %s at %d failed: running its requests one by one",
                        model, split_point, exc_info=True)
    return [_alone(service, model, split_point, item) for item in items]


def batchable(split: SplitModel, split_point: int) -> bool:
    """Whether requests at ``split_point`` can be stacked: every tensor crossing the cut and
    every output grows with the batch along its first dimension."""
    specs = (*split.split_points[split_point].tensors, *split.outputs)
    return all(spec.batch_dim == 0 for spec in specs)


def _batched(service: CloudService, model: str, split_point: int, items: list[Waiting],
             started: float) -> list[TailResult | Exception]:
    inputs = [torch.cat(parts) for parts in zip(*(i.tensors for i in items), strict=True)]
    timings: list[float] = []
    outputs = service.to_host(service.split(model).tail_outputs(inputs, split_point, timings))
    compute_s = time.perf_counter() - started
    rows = [i.rows for i in items]
    per_output = [torch.split(output, rows) for output in outputs]
    results: list[TailResult | Exception] = []
    for index, item in enumerate(items):
        mine = tuple(parts[index] for parts in per_output)
        try:  # a request whose rows overflow is refused alone
            service.check_finite(model, split_point, mine)
        except NotFinite as exc:
            results.append(exc)
            continue
        results.append(TailResult(mine, timings, compute_s, queue_s=started - item.submitted,
                                  batch_size=len(items)))
    return results


def _alone(service: CloudService, model: str, split_point: int,
           item: Waiting) -> TailResult | Exception:
    started = time.perf_counter()
    try:
        result = service.run(model, split_point, item.tensors)
    except Exception as exc:  # this request's own failure, not its batch-mates'
        return exc
    return replace(result, queue_s=started - item.submitted)
