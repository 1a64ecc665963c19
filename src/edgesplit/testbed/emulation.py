"""What a CPU quota really delivers: the root testbed's map from a wanted share to a quota.

(The userspace clock emulation, ``DutyCycler``, is in ``edgesplit.measuring.dutycycle``: the
profiler uses it too.)
"""

from __future__ import annotations

from dataclasses import dataclass

from edgesplit.errors import InvalidArgument


@dataclass(frozen=True)
class ShareMap:
    """What a CPU quota really delivers, measured, and the quota that delivers a wanted share.

    On the kernel this was built on, a CFS quota of a few milliseconds per 10 ms period delivers
    less than it says: each throttled period loses 0.2 to 0.4 ms (a 10% quota ran a forward 16x
    slower, not 10x; a 25% quota 4.7x, not 4x). ``points`` are measured (set share, delivered
    share) pairs; the inverse is read off them by linear interpolation (extrapolated from the two
    nearest points past either end). Pure: measuring is the bench's job.
    """

    points: tuple[tuple[float, float], ...] = ((1.0, 1.0),)

    def __post_init__(self) -> None:
        ordered = sorted(self.points)
        if not ordered or any(s <= 0 or d <= 0 for s, d in ordered):
            raise InvalidArgument("share map points must be positive (set, delivered) pairs")
        # Noise can make a higher quota measure slower than a lower one: keep it monotonic.
        monotonic, best = [], 0.0
        for set_share, delivered in ordered:
            best = max(best, delivered)
            monotonic.append((set_share, best))
        object.__setattr__(self, "points", tuple(monotonic))

    def setting_for(self, share: float) -> float:
        """The quota (as a share of one core) that delivers ``share``; within (0, 1]."""
        points = self.points
        if len(points) == 1:
            set_share, delivered = points[0]
            return _clip(share * set_share / delivered)
        index = next((i for i, (_, d) in enumerate(points) if d >= share), len(points) - 1)
        (s0, d0), (s1, d1) = points[max(0, index - 1)], points[max(1, index)]
        if d1 <= d0:
            return _clip(s1)
        return _clip(s0 + (share - d0) * (s1 - s0) / (d1 - d0))

    def to_dict(self) -> dict[str, list[list[float]]]:
        return {"set_vs_delivered": [[round(s, 4), round(d, 4)] for s, d in self.points]}


def _clip(share: float) -> float:
    return min(1.0, max(0.01, share))
