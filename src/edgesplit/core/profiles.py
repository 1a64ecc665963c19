"""Profiles: what a model's layers cost on one machine, as validated data.

A profile holds per-layer execution times (median of repeats, fixed thread count), the bytes each
split point sends, the machine it was measured on with its clock speed, and optionally a
calibration: whole-forward latencies at emulated clock speeds, from which the clock-speed law is
fitted. Reading, writing and caching profiles is ``edgesplit.measuring.store``'s (I/O); this
module only names the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, Field, model_validator

FORMAT: Final = "edgesplit-profile/1"


class Machine(BaseModel):
    """The machine a profile was measured on."""

    cpu: str
    cores: int = Field(ge=1)
    clock_ghz: float = Field(gt=0)
    threads: int = Field(ge=1)
    torch: str
    python: str
    platform: str

    def fingerprint(self) -> str:
        """Short stable id of the machine and settings that shape the timings."""
        key = json.dumps(self.model_dump(), sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]


class TensorInfo(BaseModel):
    name: str
    shape: list[int]
    dtype: str


class LayerProfile(BaseModel):
    index: int = Field(ge=1)
    name: str
    type: str
    time_s: float = Field(ge=0)


class SplitPointProfile(BaseModel):
    split_point: int = Field(ge=0)
    layer: str
    offload_bytes: int = Field(ge=0)
    tensors: list[TensorInfo]


class CalibrationPoint(BaseModel):
    clock_ghz: float = Field(gt=0)
    latency_s: float = Field(gt=0)


class Profile(BaseModel):
    """Per-layer times and per-split-point sizes of one model on one machine."""

    format: Literal["edgesplit-profile/1"] = FORMAT
    model: str
    machine: Machine
    created: str
    repeats: int = Field(ge=1)
    warmup: int = Field(ge=0)
    layers: list[LayerProfile]
    split_points: list[SplitPointProfile]
    forward_s: float = Field(gt=0)
    calibration: list[CalibrationPoint] = []
    digest: str | None = None  # the model version profiled (edgesplit.models.digest)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if not self.layers:
            raise ValueError("a profile needs at least one layer")
        if len(self.split_points) != len(self.layers) + 1:
            raise ValueError(
                f"{len(self.layers)} layers need {len(self.layers) + 1} split points, "
                f"got {len(self.split_points)}"
            )
        if [sp.split_point for sp in self.split_points] != list(range(len(self.split_points))):
            raise ValueError("split points must be numbered 0..N in order")
        return self

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def layer_times_s(self) -> list[float]:
        return [layer.time_s for layer in self.layers]

    @property
    def offload_bytes(self) -> list[int]:
        return [sp.offload_bytes for sp in self.split_points]


def cache_dir() -> Path:
    """``$EDGESPLIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgesplit``, else ``~/.cache/edgesplit``."""
    explicit = os.environ.get("EDGESPLIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgesplit"
