"""The measurement log: one CSV row per inference, per-layer times beside it, appended durably.

Each row is written with a single ``write`` on a file opened for appending and then ``fsync``ed,
so a crash (even ``kill -9``) loses at most the inference in flight and never corrupts earlier
rows. A reader skips a torn last line. Layer times go to their own file first, so a row never
refers to layers that were not written.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgesplit.errors import InvalidArgument

MEASUREMENTS_FILE = "measurements.csv"
LAYERS_FILE = "layers.csv"


@dataclass(frozen=True)
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
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._rows: int | None = self._open(MEASUREMENTS_FILE, MEASUREMENT_FIELDS)
            self._layers: int | None = self._open(LAYERS_FILE, LAYER_FIELDS)
        except OSError as exc:
            raise InvalidArgument(f"cannot write the measurement log in {self.directory}: "
                                  f"{exc.strerror}") from exc

    def append(self, measurement: Measurement, layers: Sequence[LayerTime] = ()) -> None:
        if self._rows is None or self._layers is None:
            raise InvalidArgument("the measurement log is closed")
        if layers:
            self._write(self._layers, [[getattr(t, k) for k in LAYER_FIELDS] for t in layers])
        self._write(self._rows, [[getattr(measurement, k) for k in MEASUREMENT_FIELDS]])

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
            self._write(fd, [header])
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
        os.write(fd, buffer.getvalue().encode())
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

