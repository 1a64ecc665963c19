"""``runs.csv``: one row per measured inference, appended unit by unit, safe to resume.

A unit is what one step of the experiment measures: one strategy's choice in one setting and
repeat (one row), one forced split point of the oracle (two rows: the same inference priced for
an owned and for a rented edge), or a whole oracle composed from measured parts (two rows per
split point). Each unit's rows are written, flushed and synced together. A run killed at any
moment leaves at most one unit incomplete (or half a line); ``RunsFile.load`` drops such rows,
so resuming measures that unit again and never duplicates a row.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesplit.core.policies import STRATEGIES as RULES
from edgesplit.core.policies import Strategy
from edgesplit.core.predictors import PREDICTORS

COLUMNS = ("model", "edge", "predictor", "strategy", "setting", "repeat", "bandwidth_kbps",
           "clock_ghz", "rtt_ms", "split_point", "codec", "predicted_latency_s", "latency_s",
           "cost_usd", "edge_s", "comm_s", "cloud_s", "sent_bytes", "method")
EDGES = ("own", "rent")
WEIGHT = 0.5
"""The weight every strategy is measured at: the thesis's evaluation weighs both equally."""
THESIS_LABELS: dict[Strategy, str] = {Strategy.COST: "OC", Strategy.LATENCY: "OL",
                                      Strategy.RANK: "CL"}
"""The thesis's names of the strategies it compares (optimise cost, optimise latency, cost and
latency): the one mapping the experiment, its tables and its report use."""


def strategies() -> dict[str, Strategy]:
    """Label -> strategy for every strategy the experiment measures: each of the registry's
    (``core.policies.STRATEGIES``) that needs no limit (the thesis's settings give no deadline
    or cost cap), the thesis's three first under their names, any other under its own."""
    free = [s for s, rule in RULES.items() if rule.needs is None]
    ordered = [*THESIS_LABELS, *(s for s in free if s not in THESIS_LABELS)]
    return {THESIS_LABELS.get(s, s.value): s for s in ordered if s in free}


def predictors() -> tuple[str, ...]:
    """Every predictor the experiment measures: the registry's (``core.predictors``), the
    thesis's first as in its tables."""
    return tuple(sorted(PREDICTORS, key=lambda name: name != "thesis"))

Key = tuple[Any, ...]


@dataclass(frozen=True)
class Unit:
    """One step of the experiment. ``kind``: ``strategy``, ``oracle`` (one forced split point,
    measured end to end) or ``parts`` (every split point, composed from measured parts)."""

    model: str
    setting: int
    repeat: int
    kind: str
    split_point: int = -1
    edge: str = ""
    predictor: str = ""
    strategy: str = ""
    n_split_points: int = 0  # for ``parts``

    @property
    def key(self) -> Key:
        if self.kind == "strategy":
            return (self.model, self.setting, self.repeat, "strategy", self.edge,
                    self.predictor, self.strategy)
        if self.kind == "oracle":
            return (self.model, self.setting, self.repeat, "oracle", self.split_point)
        return (self.model, self.setting, self.repeat, "parts")

    @property
    def rows(self) -> int:
        return {"strategy": 1, "oracle": len(EDGES)}.get(self.kind,
                                                          len(EDGES) * self.n_split_points)


def key_of(row: dict[str, str]) -> Key:
    """The unit a row belongs to."""
    model, setting, repeat = row["model"], int(row["setting"]), int(row["repeat"])
    if row["strategy"] != "oracle":
        return (model, setting, repeat, "strategy", row["edge"], row["predictor"],
                row["strategy"])
    if row["method"] == "parts":
        return (model, setting, repeat, "parts")
    return (model, setting, repeat, "oracle", int(row["split_point"]))


class RunsFile:
    """Append-only CSV of rows, loaded back as the set of finished units."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, units: Sequence[Unit]) -> set[Key]:
        """Finished unit keys; rows of unfinished units and half-written lines are dropped
        from the file."""
        if not self.path.exists():
            self._write_all([])
            return set()
        text = self.path.read_text()
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        rows = [r for r in csv.DictReader(io.StringIO(complete)) if None not in r.values()]
        expected = {u.key: u.rows for u in units}
        counts = Counter(key_of(r) for r in rows)
        finished = {k for k, n in counts.items() if expected.get(k) == n}
        kept = [r for r in rows if key_of(r) in finished]
        if len(kept) != len(rows) or complete != text:
            self._write_all(kept)
        return finished

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
        writer.writerows(rows)
        with open(self.path, "a") as sink:
            sink.write(buffer.getvalue())
            sink.flush()
            os.fsync(sink.fileno())

    def _write_all(self, rows: list[dict[str, Any]]) -> None:
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "w") as sink:
            writer = csv.DictWriter(sink, COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            sink.flush()
            os.fsync(sink.fileno())
        temporary.replace(self.path)


def read_runs(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as source:
        return list(csv.DictReader(source))
