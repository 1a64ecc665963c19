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
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesplit.core import zoo
from edgesplit.core.policies import STRATEGIES as RULES
from edgesplit.core.policies import Strategy
from edgesplit.core.predictors import PREDICTORS
from edgesplit.errors import InvalidArgument
from edgesplit.models.names import is_zoo

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

    def check(self, config: Any, settings: Sequence[Any]) -> None:
        """Refuse, in one line and before anything starts, a file this experiment did not write:
        another header, a line that does not parse, or rows of other models, settings, links or
        repeats (``config``: an ``ExperimentConfig``; ``settings``: its drawn settings). Only
        what a crash leaves is let through: a torn last line, which ``load`` drops."""
        rows = self._rows()
        if rows is None:
            return
        for number, row in enumerate(rows, start=2):
            problem = _problem(row, config, settings)
            if problem:
                raise InvalidArgument(f"{self.path} line {number}: {problem}; nothing was "
                                      f"started or deleted: {_FIX}")

    def load(self, units: Sequence[Unit]) -> set[Key]:
        """Finished unit keys. What a killed run leaves is dropped: a torn last line and the
        rows of the one unit it was writing, at the end of the file. Any other row that no
        unit expects is refused, never deleted."""
        rows = self._rows()
        if rows is None:
            self._write_all([])
            return set()
        expected = {u.key: u.rows for u in units}
        counts = Counter(key_of(r) for r in rows)
        extra = next((k for k, n in counts.items() if n > expected.get(k, 0)), None)
        if extra is not None:
            raise InvalidArgument(f"{self.path} holds rows this experiment does not measure "
                                  f"(unit {extra}, {counts[extra]} rows): {_FIX}")
        finished = {k for k, n in counts.items() if expected[k] == n}
        kept = [r for r in rows if key_of(r) in finished]
        torn = rows[len(kept):]
        if kept != rows[:len(kept)] or len({key_of(r) for r in torn}) > 1:
            raise InvalidArgument(f"{self.path} holds unfinished units before its last one, "
                                  f"which no crash leaves: {_FIX}")
        if torn or not self.path.read_text().endswith("\n"):
            self._write_all(kept)
        return finished

    def _rows(self) -> list[dict[str, str]] | None:
        """The rows of every whole line (None: no file yet, or an empty one)."""
        try:
            text = self.path.read_text() if self.path.exists() else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"{self.path} cannot be read ({exc}): {_FIX}") from exc
        if not text:
            return None
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(complete))
        if reader.fieldnames != list(COLUMNS):
            raise InvalidArgument(f"{self.path} is not an edgesplit experiment's runs.csv (its "
                                  f"header names other columns): {_FIX}")
        return list(reader)

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


_FIX = "move it aside (or fix that line) and resume, or use another --out"
_TIMES = ("latency_s", "edge_s", "comm_s", "cloud_s", "cost_usd", "sent_bytes")


def _problem(row: dict[str, Any], config: Any, settings: Sequence[Any]) -> str | None:
    """What is wrong with one row of ``runs.csv`` for this experiment; None when nothing."""
    if None in row or None in row.values():
        return f"{len(COLUMNS)} fields expected"
    if row["model"] not in config.names:
        return f"model {row['model']!r} is not one of this experiment's " \
            f"({', '.join(config.names)})"
    choices = {"edge": EDGES, "strategy": (*strategies(), "oracle"), "method": ("e2e", "parts"),
               "predictor": (*predictors(), "")}
    for column, allowed in choices.items():
        if row[column] not in allowed:
            return f"{column}={row[column]!r}, not one of {', '.join(map(repr, allowed))}"
    bounds = {"setting": len(settings), "repeat": config.repeats,
              # a model of one's own: its cuts are known from its profile, checked as measured
              "split_point": zoo.get_spec(row["model"]).split_points if is_zoo(row["model"])
              else 1 << 20}
    for column, end in bounds.items():
        if not row[column].isdigit() or int(row[column]) >= end:
            return f"{column}={row[column]!r}, not a whole number below {end}"
    try:
        times = [float(row[k]) for k in _TIMES]
        measured = (float(row["bandwidth_kbps"]), float(row["clock_ghz"]), float(row["rtt_ms"]))
    except ValueError:
        return f"a number is expected in each of {', '.join(_TIMES)}, bandwidth_kbps, " \
            "clock_ghz and rtt_ms"
    if not all(math.isfinite(t) and t >= 0 for t in times):
        return f"impossible times ({', '.join(f'{k}={row[k]}' for k in _TIMES)})"
    setting = settings[int(row["setting"])]
    if measured != (setting.bandwidth_kbps, setting.clock_ghz, config.rtt_ms):
        return f"setting {row['setting']} measured at {measured[0]:g} kbit/s, " \
            f"{measured[1]:g} GHz, RTT {measured[2]:g} ms, where this experiment's is at " \
            f"{setting.bandwidth_kbps:g} kbit/s, {setting.clock_ghz:g} GHz, RTT " \
            f"{config.rtt_ms:g} ms (another experiment's rows)"
    return None


def read_runs(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as source:
        return list(csv.DictReader(source))
