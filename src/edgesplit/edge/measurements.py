"""The measurement log: one CSV row per inference, per-layer times beside it, appended durably.

Each row is written on a file opened for appending (short writes finished) and then ``fsync``ed,
so a crash (even ``kill -9``) loses at most the inference in flight and never corrupts earlier
rows. A reader skips a torn last line. A row the disk refuses (full, over quota) is cut back
out, so no torn row is left, and the edge infers on unlogged until a row fits again. Layer times
go to their own file first, so a row never refers to layers that were not written.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgesplit.errors import InvalidArgument

log = logging.getLogger(__name__)
MEASUREMENTS_FILE = "measurements.csv"
LAYERS_FILE = "layers.csv"


@dataclass(frozen=True, slots=True)  # slots: a report holds a long log's rows in memory
class Measurement:
    """What one inference did: conditions, plan, prediction and measured latencies (s)."""

    seq: int  # 1, 2, ... within a run
    run: str  # which run of the runtime: several may append to one log
    time: str  # ISO 8601, UTC
    elapsed_s: float  # since the runtime started
    model: str
    strategy: str
    weight: float
    edge: str  # own | rent
    predictor: str
    codec: str
    split_point: int
    clock_ghz: float
    bandwidth_kbps: float  # the edge's estimate when it planned
    rtt_ms: float
    predicted_edge_s: float
    predicted_comm_s: float
    predicted_cloud_s: float
    predicted_latency_s: float
    predicted_cost_usd: float
    edge_s: float  # thesis equation 3.1: head (and encoding) on the edge
    comm_s: float  # overall minus edge and cloud: the network and HTTP, both ways
    comm_thesis_s: float  # thesis equation 3.3
    cloud_s: float  # thesis equation 3.2, as the cloud reports it
    latency_s: float  # thesis equation 3.4
    cost_usd: float  # from the measured times
    offload_bytes: int  # raw size of what crossed the cut
    sent_bytes: int  # the request body as sent (after the codec)
    deadline_s: float  # how long the edge would wait for the cloud (0: it did not ask)
    finished: str  # cloud | edge (fallback or offline)
    fallback: str  # why the edge finished it, empty when the cloud did
    replan: str  # why this inference re-planned, empty when it did not
    top1_class: int  # the model's answer: its top-1 class (not a ``Prediction`` of latency)


@dataclass(frozen=True)
class LayerTime:
    seq: int
    run: str
    side: str  # edge | cloud
    index: int
    layer: str
    time_s: float


MEASUREMENT_FIELDS = [f.name for f in fields(Measurement)]
RENAMED = {"prediction": "top1_class"}
"""Columns of logs that earlier versions wrote, by their name now: such logs are still read."""
LAYER_FIELDS = [f.name for f in fields(LayerTime)]


class MeasurementLog:
    """Appends measurements to ``directory/measurements.csv`` and ``directory/layers.csv``."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.unlogged = 0  # inferences not logged since the disk last refused a row
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._rows: int | None = self._open(MEASUREMENTS_FILE, MEASUREMENT_FIELDS)
            self._layers: int | None = self._open(LAYERS_FILE, LAYER_FIELDS)
        except OSError as exc:
            raise InvalidArgument(f"cannot write the measurement log in {self.directory}: "
                                  f"{exc.strerror}") from exc

    def append(self, measurement: Measurement, layers: Sequence[LayerTime] = ()) -> None:
        """Log one inference, or, when the disk refuses (full, quota), neither its row nor its
        layer times: the inference itself is never failed by its log. The first refusal is
        warned about once; logging resumes by itself with the first row that fits again."""
        if self._rows is None or self._layers is None:
            raise InvalidArgument("the measurement log is closed")
        ends = (os.fstat(self._layers).st_size, os.fstat(self._rows).st_size)
        try:
            if layers:
                self._write(self._layers, [[getattr(t, k) for k in LAYER_FIELDS]
                                           for t in layers])
            self._write(self._rows, [[getattr(measurement, k) for k in MEASUREMENT_FIELDS]])
        except OSError as exc:
            # Cut both files back to where they ended, so no torn row and no layer times of an
            # unlogged row are left (freeing, so truncating works on a full disk).
            for fd, end in zip((self._layers, self._rows), ends, strict=True):
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
            self._skipped(measurement.seq, exc)
            return
        if self.unlogged:
            log.warning("logging to %s again from inference %d (%d not logged)",
                        self.directory, measurement.seq, self.unlogged)
            self.unlogged = 0

    def _skipped(self, seq: int, exc: OSError) -> None:
        self.unlogged += 1
        if self.unlogged == 1:
            log.warning("cannot write the measurement log in %s (%s) from inference %d: "
                        "inferring on without logging, and logging again once it can",
                        self.directory, exc.strerror or exc, seq)

    def close(self) -> None:
        for fd in (self._rows, self._layers):
            if fd is not None:
                os.close(fd)
        self._rows = self._layers = None

    def __enter__(self) -> MeasurementLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, name: str, header: list[str]) -> int:
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if os.fstat(fd).st_size == 0:
            try:
                self._write(fd, [header])
            except OSError:
                os.ftruncate(fd, 0)  # no torn header, which would look like another version's
                os.close(fd)
                raise
            return fd
        if _header(path) != header:
            os.close(fd)
            raise InvalidArgument(f"{path} holds other columns (another version wrote it): "
                                  "log to a new folder")
        _heal(path, fd)
        return fd

    def _write(self, fd: int, rows: list[list[Any]]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        data = memoryview(buffer.getvalue().encode())
        while data:  # a short write (the disk filling up) is finished or fails with ENOSPC
            data = data[os.write(fd, data):]
        if self.fsync:
            os.fsync(fd)


def _header(path: Path) -> list[str] | None:
    with open(path, newline="") as handle:
        return next(csv.reader(handle), None)


def _heal(path: Path, fd: int) -> None:
    """After a crash mid-write, end a torn last line so new rows start on a line of their own."""
    with open(path, "rb") as existing:
        existing.seek(-1, os.SEEK_END)
        if existing.read(1) != b"\n":
            os.write(fd, b"\n")


def read_rows(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a log file; a torn or foreign line (wrong number of fields) is skipped."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        for row in reader:
            if len(row) == len(header):
                yield dict(zip(header, row, strict=True))


def check_log(directory: Path) -> None:
    """Raise ``InvalidArgument`` unless ``directory`` holds an edgesplit measurement log."""
    path = Path(directory) / MEASUREMENTS_FILE
    try:
        header = _header(path)
    except OSError as exc:
        raise InvalidArgument(f"no measurement log in {directory} ({exc.strerror}): give the "
                              "folder of an 'edge run --log' or a demo report") from exc
    if [RENAMED.get(name, name) for name in header or []] != MEASUREMENT_FIELDS:
        raise InvalidArgument(f"{path} is not an edgesplit measurement log (other columns)")


def read_measurements(directory: Path) -> list[Measurement]:
    """Every intact measurement in ``directory``, typed as when written."""
    out = []
    types = {f.name: f.type for f in fields(Measurement)}
    for row in read_rows(Path(directory) / MEASUREMENTS_FILE):
        try:
            out.append(Measurement(**{RENAMED.get(k, k): _convert(types[RENAMED.get(k, k)], v)
                                      for k, v in row.items()}))
        except (KeyError, ValueError):
            continue
    return out


def _convert(kind: Any, value: str) -> Any:
    if kind in ("int", int):
        return int(value)
    if kind in ("float", float):
        return float(value)
    return value


_KINDS = {f.name: {"int": np.int64, "float": np.float64}.get(str(f.type), object)
          for f in fields(Measurement)}
NUMBER_FIELDS = [name for name, kind in _KINDS.items() if kind is not object]
_LABELS = {"run", "model", "strategy", "edge", "predictor", "codec", "finished", "fallback",
           "replan"}  # a few distinct values each: interned, so 200k rows share them
CHUNK_ROWS = 16_384


@dataclass(frozen=True)
class MeasurementColumns:
    """A log's rows as columns: numbers in numpy arrays, text in object arrays. A report reads
    a long log this way (200k rows: seconds and tens of MB, where ``Measurement`` objects took
    half a minute and a GB). ``impossible`` counts the rows left out for a number that is NaN,
    infinite or negative (the edge never writes one: the file was damaged or edited)."""

    data: dict[str, np.ndarray]
    impossible: int = 0
    first_impossible: str = ""  # e.g. "line 12: latency_s=nan"

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def take(self, which: np.ndarray) -> MeasurementColumns:
        """The rows ``which`` (a boolean mask or indices) selects."""
        return MeasurementColumns({name: column[which] for name, column in self.data.items()})

    @classmethod
    def of(cls, measurements: Sequence[Measurement]) -> MeasurementColumns:
        return cls({name: np.array([getattr(m, name) for m in measurements], dtype=kind)
                    for name, kind in _KINDS.items()})


def read_columns(directory: Path,
                 columns: Sequence[str] = tuple(MEASUREMENT_FIELDS)) -> MeasurementColumns:
    """``columns`` of ``directory``'s log, streamed a chunk of rows at a time; torn or foreign
    lines are skipped as by ``read_rows``, rows with an impossible number in ``columns``
    counted and left out."""
    unknown = set(columns) - set(MEASUREMENT_FIELDS)
    if unknown:
        raise InvalidArgument(f"a measurement log has no column {sorted(unknown)[0]!r}")
    parts: list[MeasurementColumns] = []
    with open(Path(directory) / MEASUREMENTS_FILE, newline="") as handle:
        reader = csv.reader(handle)
        if next(reader, None) == MEASUREMENT_FIELDS:
            while True:
                chunk = [(row, reader.line_num) for row in itertools.islice(reader, CHUNK_ROWS)]
                whole = [(row, line) for row, line in chunk if len(row) == len(MEASUREMENT_FIELDS)]
                parts.append(_chunk([row for row, _ in whole], [line for _, line in whole],
                                    columns))
                if len(chunk) < CHUNK_ROWS:
                    break
    first = next((p.first_impossible for p in parts if p.impossible), "")
    return MeasurementColumns({name: np.concatenate([p[name] for p in parts]) if parts else
                               np.array([], dtype=_KINDS[name]) for name in columns},
                              sum(p.impossible for p in parts), first)


def _chunk(rows: list[list[str]], lines: list[int], columns: Sequence[str]) -> MeasurementColumns:
    """Rows of text to columns; rows whose numbers do not parse are skipped (as torn)."""
    try:
        data = _typed(rows, columns)
    except ValueError:  # rare: find the rows that do not parse, then convert the rest
        keep = [i for i, row in enumerate(rows) if _parses(row, columns)]
        rows, lines = [rows[i] for i in keep], [lines[i] for i in keep]
        data = _typed(rows, columns)
    numbers = [name for name in columns if name in NUMBER_FIELDS]
    ok = np.ones(len(rows), dtype=bool)
    for name in numbers:
        ok &= np.isfinite(data[name]) & (data[name] >= 0)  # False for NaN too
    if ok.all():
        return MeasurementColumns(data)
    bad = int(np.argmin(ok))
    column = next(n for n in numbers if not 0 <= data[n][bad] < math.inf)
    return MeasurementColumns({name: values[ok] for name, values in data.items()},
                              int((~ok).sum()), f"line {lines[bad]}: {column}="
                              f"{rows[bad][MEASUREMENT_FIELDS.index(column)]}")


def _typed(rows: list[list[str]], columns: Sequence[str]) -> dict[str, np.ndarray]:
    data = {}
    for name in columns:
        index, kind = MEASUREMENT_FIELDS.index(name), _KINDS[name]
        values = [row[index] for row in rows]
        if kind is object:
            data[name] = np.array([sys.intern(v) for v in values] if name in _LABELS else values,
                                  dtype=object)
        else:
            data[name] = np.fromiter(map(int if kind is np.int64 else float, values),
                                     dtype=kind, count=len(values))
    return data


def _parses(row: list[str], columns: Sequence[str]) -> bool:
    try:
        for name in columns:
            if _KINDS[name] is not object:
                (int if _KINDS[name] is np.int64 else float)(row[MEASUREMENT_FIELDS.index(name)])
    except ValueError:
        return False
    return True
