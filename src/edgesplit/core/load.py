"""A shared cloud's load, and the time a new request will wait there. Pure: numbers in, numbers out.

Many edges share one cloud tier, and the thesis's model assumes a cloud that is never busy. The
cloud reports, per model and split point, how many requests it holds (waiting or running) and how
long one of their tails recently took; the time a new request waits is the work ahead of it over
the tails the cloud runs at once. The edge adds that wait to the cloud time of every split point
that leaves layers to the cloud (``Conditions.cloud_wait_s``), so a busy cloud pushes the split
toward the edge.

>>> expected_wait_s([TailLoad("alexnet", 14, queued=6, tail_s=0.02)], slots=2)
0.06
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgesplit.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class TailLoad:
    """One model and split point on the cloud: requests held, and one tail's recent time."""

    model: str
    split_point: int
    queued: int  # waiting or running
    tail_s: float  # recent time of one request's tail (a batch's time over its size)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "split_point": self.split_point, "queued": self.queued,
                "tail_s": self.tail_s}


def expected_wait_s(loads: Iterable[TailLoad], slots: int) -> float:
    """Seconds a request arriving now waits before its own tail starts: the work held (each
    request's recent tail time) shared over the ``slots`` tails the cloud runs at once."""
    if slots < 1:
        raise InvalidArgument(f"slots must be 1 or more, got {slots}")
    return sum(max(0, load.queued) * max(0.0, load.tail_s) for load in loads) / slots


def with_wait(cloud_s: tuple[float, ...], wait_s: float) -> tuple[float, ...]:
    """Add ``wait_s`` to every split point but the last, which leaves the cloud nothing to run
    (it only receives the edge's result and never queues for a tail)."""
    if wait_s <= 0:
        return cloud_s
    return (*(t + wait_s for t in cloud_s[:-1]), cloud_s[-1])
