"""The adaptive batcher's company: clients that send again as soon as they are answered get full
batches, a lone client never waits, nor does one that comes long after a burst. A real
``CloudService`` and model; the worker is a gate the test opens, so which requests share a batch
does not depend on the machine's speed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import torch

from edgesplit.cloud.batching import TailBatcher
from edgesplit.cloud.service import CloudService, TailResult

from .test_batching import cuts

MODEL, CUT = "mnist_cnn", 5


class GatedWorker:
    """Runs each batch only once the test releases it: batch sizes then follow the order of
    events, not timing."""

    def __init__(self) -> None:
        self.calls: list[asyncio.Event] = []

    async def __call__(self, run: Callable[[], Any]) -> Any:
        released = asyncio.Event()
        self.calls.append(released)
        await released.wait()
        return run()

    async def release(self, index: int, after_s: float = 0.0) -> None:
        """Release batch ``index`` once it has started and ``after_s`` have passed."""
        while len(self.calls) <= index:
            await asyncio.sleep(0.001)
        await asyncio.sleep(after_s)
        self.calls[index].set()


async def settle() -> None:
    """Let every ready callback run (far sooner than any hold of the batcher's ends)."""
    for _ in range(20):
        await asyncio.sleep(0)


def submit(batcher: TailBatcher, tensors: list[torch.Tensor]) -> list[Awaitable[TailResult]]:
    return [asyncio.ensure_future(batcher.run(MODEL, CUT, [t])) for t in tensors]


async def sizes(runs: list[Awaitable[TailResult]]) -> list[int]:
    """The batch sizes the requests ran in; a batch the test never releases fails it (the
    bound only makes a broken batcher fail, never a slow machine)."""
    done = await asyncio.wait_for(asyncio.gather(*runs), timeout=60)
    return [result.batch_size for result in done]


async def company(service: CloudService, tensors: list[torch.Tensor]) -> dict[str, Any]:
    worker = GatedWorker()
    batcher = TailBatcher(service, worker, max_batch_size=8, workers=1)
    seen: dict[str, Any] = {}
    # A lone client: run at once and alone, as unbatched.
    lone = submit(batcher, tensors[:1])
    await settle()
    seen["lone started"] = len(worker.calls)
    await worker.release(0)
    seen["lone"] = await sizes(lone)
    # Eight clients: the first finds the worker free and runs alone; seven queue behind it.
    # Each batch takes a second (so a hold, half the last batch's time, outlasts the test's
    # own steps on any machine).
    first = submit(batcher, tensors[:8])
    await worker.release(1, after_s=1.0)
    await worker.release(2, after_s=1.0)
    seen["first round"] = await sizes(first)
    # They send again one by one as their answers come: the worker is free, but eight were
    # inside at once while the last batch ran, so the first to return is held for company.
    again = submit(batcher, tensors[:1])
    await settle()
    seen["held"] = len(worker.calls)
    again += submit(batcher, tensors[1:8])
    await worker.release(3, after_s=1.0)
    seen["second round"] = await sizes(again)
    # The eight are gone: a request that comes later after that batch ended than a hold would
    # last (half its second) finds the company stale and runs at once, alone.
    await asyncio.sleep(0.7)
    late = submit(batcher, tensors[:1])
    await settle()
    seen["late started"] = len(worker.calls)
    await worker.release(4)
    seen["late"] = await sizes(late)
    return seen


def test_clients_that_send_again_at_once_get_full_batches_and_a_lone_one_never_waits(
        split_model: Callable[[str], Any]) -> None:
    split = split_model(MODEL)
    service = CloudService({MODEL: split})
    tensors = cuts(split, MODEL, CUT, 8)
    seen = asyncio.run(company(service, tensors))
    assert seen["lone started"] == 1 and seen["lone"] == [1]
    assert seen["first round"] == [1, 7, 7, 7, 7, 7, 7, 7]
    assert seen["held"] == 3  # the lone batch and the first round's two: none started yet
    assert seen["second round"] == [8] * 8
    assert seen["late started"] == 5 and seen["late"] == [1]
    # And every answer is the request's own.
    results = asyncio.run(_answers(service, tensors))
    for tensor, result in zip(tensors, results, strict=True):
        torch.testing.assert_close(result.outputs[0], split.tail([tensor], CUT),
                                   rtol=1e-4, atol=1e-5)


async def _answers(service: CloudService, tensors: list[torch.Tensor]) -> list[TailResult]:
    batcher = TailBatcher(service, _at_once, max_batch_size=8, workers=1)
    return list(await asyncio.gather(*submit(batcher, tensors)))


async def _at_once(run: Callable[[], Any]) -> Any:
    return run()
