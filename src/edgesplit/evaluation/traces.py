"""Condition traces: how bandwidth, round trip, jitter, clock and the cloud change (pure).

A trace is a JSON file: ``{"name", "description", "duration_s", "points": [{"t_s",
"bandwidth_kbps", "rtt_ms", "jitter_ms", "clock_ghz", "cloud_up"}, ...]}``. Each point holds
from its ``t_s`` until the next (a step function, as the testbed's knobs change), the first at
``t_s = 0``. The named library ships in ``edgesplit/data/traces/``; a path to a file of one's own
is read the same way. Reading validates everything and says in one line what is wrong.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgesplit.errors import InvalidArgument

FIELDS = ("t_s", "bandwidth_kbps", "rtt_ms", "jitter_ms", "clock_ghz", "cloud_up")


@dataclass(frozen=True)
class Point:
    """The true conditions from ``t_s`` on (seconds since the trace began)."""

    t_s: float
    bandwidth_kbps: float
    rtt_ms: float
    jitter_ms: float = 0.0
    clock_ghz: float = 1.5
    cloud_up: bool = True

    def condition(self) -> tuple[float, float, float, float, bool]:
        """Everything but the time: points with equal conditions share an oracle."""
        return (self.bandwidth_kbps, self.rtt_ms, self.jitter_ms, self.clock_ghz, self.cloud_up)


@dataclass(frozen=True)
class Trace:
    name: str
    description: str
    duration_s: float
    points: tuple[Point, ...]

    def at(self, t_s: float) -> Point:
        """The point in force at ``t_s`` (the last one past the end)."""
        current = self.points[0]
        for point in self.points[1:]:
            if point.t_s > t_s:
                break
            current = point
        return current

    def segment(self, t_s: float) -> int:
        """Which point (its index) is in force at ``t_s``."""
        return self.points.index(self.at(t_s))

    def conditions(self) -> list[tuple[float, float, float, float, bool]]:
        """The distinct conditions the trace visits, in first-visit order."""
        return list(dict.fromkeys(p.condition() for p in self.points))

    def sample(self, step_s: float) -> list[Point]:
        """The trace every ``step_s`` seconds over its duration (for drawing and checks)."""
        if step_s <= 0:
            raise InvalidArgument(f"the sampling step must be positive, got {step_s}")
        count = int(self.duration_s / step_s) + 1
        return [replace_time(self.at(i * step_s), i * step_s) for i in range(count)]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "duration_s": self.duration_s, "points": [asdict(p) for p in self.points]}


def replace_time(point: Point, t_s: float) -> Point:
    return Point(t_s, point.bandwidth_kbps, point.rtt_ms, point.jitter_ms, point.clock_ghz,
                 point.cloud_up)


def parse_trace(data: Any, source: str) -> Trace:
    """A ``Trace`` from decoded JSON, validated (``source`` names it in errors)."""
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise InvalidArgument(f"{source}: a trace is an object with a list of points")
    points = tuple(_point(p, source, i) for i, p in enumerate(data["points"]))
    if not points or points[0].t_s != 0:
        raise InvalidArgument(f"{source}: the first point must be at t_s = 0")
    if any(b.t_s <= a.t_s for a, b in itertools.pairwise(points)):
        raise InvalidArgument(f"{source}: the points' t_s must increase")
    duration = data.get("duration_s")
    if not isinstance(duration, int | float) or duration <= points[-1].t_s:
        raise InvalidArgument(f"{source}: duration_s must be a number past the last point's t_s")
    return Trace(str(data.get("name") or Path(source).stem), str(data.get("description", "")),
                 float(duration), points)


def _point(raw: Any, source: str, index: int) -> Point:
    where = f"{source}: point {index}"
    if not isinstance(raw, dict) or not {"t_s", "bandwidth_kbps", "rtt_ms"} <= raw.keys():
        raise InvalidArgument(f"{where} needs t_s, bandwidth_kbps and rtt_ms")
    unknown = raw.keys() - set(FIELDS)
    if unknown:
        raise InvalidArgument(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    numbers = {k: raw[k] for k in FIELDS[:-1] if k in raw}
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers.values()):
        raise InvalidArgument(f"{where}: {', '.join(FIELDS[:-1])} must be numbers")
    if min(numbers.values()) < 0 or raw["bandwidth_kbps"] <= 0 or raw.get("clock_ghz", 1) <= 0:
        raise InvalidArgument(f"{where}: times and delays must be 0 or more, the bandwidth and "
                              "clock more than 0")
    if not isinstance(raw.get("cloud_up", True), bool):
        raise InvalidArgument(f"{where}: cloud_up must be true or false")
    return Point(**{k: float(v) for k, v in numbers.items()},
                 cloud_up=raw.get("cloud_up", True))


def library_names() -> list[str]:
    """The shipped traces' names, sorted."""
    folder = resources.files("edgesplit") / "data" / "traces"
    return sorted(f.name.removesuffix(".json") for f in folder.iterdir()
                  if f.name.endswith(".json"))


def load_trace(name_or_path: str) -> Trace:
    """A shipped trace by name, or a trace file by path."""
    if name_or_path in library_names():
        text = (resources.files("edgesplit") / "data" / "traces" /
                f"{name_or_path}.json").read_text()
        return parse_trace(json.loads(text), name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise InvalidArgument(f"no trace named {name_or_path!r} (shipped: "
                              f"{', '.join(library_names())}) and no such file")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read the trace {path}: {exc}") from exc
    return parse_trace(data, str(path))


def load_traces(names: Iterable[str]) -> list[Trace]:
    traces = [load_trace(n) for n in names]
    seen = [t.name for t in traces]
    if len(set(seen)) != len(seen):
        raise InvalidArgument(f"trace names must differ: {', '.join(seen)}")
    return traces


def scaled(trace: Trace, factor: float) -> Trace:
    """The trace played ``factor`` times as long (0.25: four times faster), for quick runs."""
    if factor <= 0:
        raise InvalidArgument(f"the time scale must be positive, got {factor}")
    return Trace(trace.name, trace.description, trace.duration_s * factor,
                 tuple(replace_time(p, p.t_s * factor) for p in trace.points))


def change_times(trace: Trace, fields: Sequence[str] = FIELDS[1:]) -> list[float]:
    """When any of ``fields`` changes (the points after the first that move one)."""
    return [b.t_s for a, b in zip(trace.points, trace.points[1:], strict=False)
            if any(getattr(a, f) != getattr(b, f) for f in fields)]
