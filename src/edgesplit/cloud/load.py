"""What the cloud is holding, per model and split point, for its answers and ``/edgesplit/load``.

``LoadMeter`` counts the requests each model and split point has waiting or running, and keeps
an exponentially weighted recent time of one request's tail (a batch's compute time over its
size, so that batching shows up as cheaper tails). The wait a new request can expect is
``core.load.expected_wait_s`` over those figures and the tails the cloud runs at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgesplit.core.load import TailLoad, expected_wait_s


class LoadMeter:
    """Requests held and recent tail times per (model, split point); one per app, loop-bound."""

    def __init__(self, slots: int, smoothing: float = 0.2) -> None:
        self.slots = slots
        self.smoothing = smoothing
        self._held: dict[tuple[str, int], int] = {}
        self._tail_s: dict[tuple[str, int], float] = {}

    @contextmanager
    def holding(self, model: str, split_point: int) -> Iterator[None]:
        """Count one request of ``model`` at ``split_point`` while it waits and runs."""
        key = (model, split_point)
        self._held[key] = self._held.get(key, 0) + 1
        try:
            yield
        finally:
            self._held[key] -= 1

    def observe(self, model: str, split_point: int, per_request_s: float) -> None:
        key = (model, split_point)
        old = self._tail_s.get(key)
        self._tail_s[key] = per_request_s if old is None else \
            old + self.smoothing * (per_request_s - old)

    def loads(self) -> list[TailLoad]:
        return [TailLoad(model, sp, self._held.get((model, sp), 0), tail_s)
                for (model, sp), tail_s in sorted(self._tail_s.items())]

    def queue_length(self) -> int:
        return sum(self._held.values())

    def expected_wait_s(self) -> float:
        return expected_wait_s(self.loads(), self.slots)

    def parameters(self, model: str, split_point: int) -> dict[str, Any]:
        """What every answer carries about the load (OIP response parameters)."""
        return {"queue_length": self.queue_length(),
                "recent_tail_s": self._tail_s.get((model, split_point), 0.0),
                "expected_wait_s": self.expected_wait_s()}

    def status(self) -> dict[str, Any]:
        """The whole table, for ``GET /edgesplit/load``."""
        return {"slots": self.slots, "queue_length": self.queue_length(),
                "expected_wait_s": self.expected_wait_s(),
                "tails": [load.to_dict() for load in self.loads()]}
