"""``edgesplit export``: the head and the tail of one cut as files, with a manifest.

``DIR/head.pt2`` and ``DIR/tail.pt2`` (``torch.export.save``; load with ``torch.export.load``)
or ``DIR/head.onnx`` and ``DIR/tail.onnx`` (weights inside), and ``DIR/manifest.json``: the
model, its digest, the split point, the format, the edgesplit version, and each half's inputs and
outputs in order, by name, with shape (batch dimension included, ``-1`` where it follows the
batch: ``open_shape``) and dtype. The head's outputs are the tail's inputs: the tensors at the
cut. An ONNX file names its inputs and outputs as the manifest's ``onnx_name`` says
(``input.``, ``cut.`` or ``output.`` and the tensor's name).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from edgesplit.core.splitting import SplitModel, TensorSpec
from edgesplit.errors import InvalidArgument
from edgesplit.export.halves import HEAD, TAIL, export_half, onnx_bytes, onnx_names

FORMATS = ("pt2", "onnx")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "edgesplit-export/1"


@dataclass(frozen=True)
class Exported:
    """What ``export_halves`` wrote: the files and the manifest's contents."""

    head: Path
    tail: Path
    manifest: dict[str, Any]


def export_halves(split: SplitModel, sample: torch.Tensor, split_point: int, fmt: str,
                  out_dir: Path, *, model: str, digest: str) -> Exported:
    """Write the head and the tail at ``split_point`` in ``fmt`` (``pt2`` or ``onnx``) and the
    manifest to ``out_dir`` (created; files of the same names replaced)."""
    if fmt not in FORMATS:
        raise InvalidArgument(f"unknown export format {fmt!r}: expected one of {FORMATS}")
    cut = split.split_points[split_point].tensors if 0 <= split_point <= split.n_layers else ()
    sides = {HEAD: (split.split_points[0].tensors, cut), TAIL: (cut, split.outputs)}
    files: dict[str, bytes] = {}
    for side in sides:
        program = export_half(split, sample, side, split_point)
        files[side] = (onnx_bytes(program, *onnx_names(split, side, split_point))
                       if fmt == "onnx" else _pt2_bytes(program))
    manifest = {
        "format": MANIFEST_FORMAT, "model": model, "digest": digest,
        "split_point": split_point, "layer": split.split_points[split_point].layer,
        "n_layers": split.n_layers, "export_format": fmt, "edgesplit": _version(),
        "torch": torch.__version__,
        **{side: _half(split, side, split_point, fmt, inputs, outputs)
           for side, (inputs, outputs) in sides.items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for side, data in files.items():
        (out_dir / f"{side}.{fmt}").write_bytes(data)
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Exported(out_dir / f"{HEAD}.{fmt}", out_dir / f"{TAIL}.{fmt}", manifest)


def _pt2_bytes(program: torch.export.ExportedProgram) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _half(split: SplitModel, side: str, split_point: int, fmt: str,
          inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """A half's entry in the manifest: its file, and its inputs and outputs in order."""
    names = onnx_names(split, side, split_point) if fmt == "onnx" else ([], [])
    return {"file": f"{side}.{fmt}",
            "inputs": [_tensor(t, n) for t, n in itertools.zip_longest(inputs, names[0])],
            "outputs": [_tensor(t, n) for t, n in itertools.zip_longest(outputs, names[1])]}


def _tensor(spec: TensorSpec, onnx_name: str | None) -> dict[str, Any]:
    return {"name": spec.name, "shape": spec.open_shape, "dtype": spec.dtype,
            "batch_dim": None if spec.free else spec.batch_dim,
            **({"onnx_name": onnx_name} if onnx_name else {})}


def _version() -> str:
    try:
        return version("edgesplit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
