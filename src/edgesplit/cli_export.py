"""``edgesplit export``: the head and the tail of one split point as files, registered by
``cli.py``. Heavy imports (torch, the exporters) stay inside the command so ``--help`` stays
fast."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from edgesplit.cli_options import Writable
from edgesplit.extras import require_extra

out = Console()


@click.command("export")
@click.option("--model", required=True, help="A zoo model name, a torch.export program file "
              "(.pt2) or package.module:factory.")
@click.option("--split-point", type=click.IntRange(min=0), required=True,
              help="The cut: the head runs layers 1..K, the tail the rest (1 to N-1).")
@click.option("--format", "fmt", type=click.Choice(["pt2", "onnx"]), default="pt2",
              show_default=True,
              help="torch.export programs, or ONNX (needs the onnx extra).")
@click.option("--out", "out_dir", type=Writable(folder=True), required=True,
              help="Write head.FORMAT, tail.FORMAT and manifest.json here.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def export(model: str, split_point: int, fmt: str, out_dir: Path, as_json: bool,
           input_shape: str | None, input_dtype: str | None) -> None:
    """Export the head and the tail of --model cut at --split-point as standalone files.

    ``--input-shape`` and ``--input-dtype`` are added where ``cli.py`` registers the command
    (its ``input_options``, which this module cannot import: ``cli.py`` imports it)."""
    from edgesplit.cli import own_model
    from edgesplit.models.names import check_source

    check_source(model)  # a bad name or a missing file is one line before torch is imported
    if fmt == "onnx":
        require_extra("--format onnx", "onnx")
    from edgesplit.export.bundle import export_halves
    from edgesplit.models.sources import load_model

    loaded = own_model(model, input_shape, input_dtype) or load_model(model)
    result = export_halves(loaded.split, loaded.sample, split_point, fmt, out_dir,
                           model=loaded.name, digest=loaded.digest)
    if as_json:
        print(json.dumps(result.manifest))
        return
    manifest = result.manifest
    cut = ", ".join(f"{t['name']} {t['dtype']}{t['shape']}" for t in manifest["head"]["outputs"])
    out.print(f"{loaded.name} at split point {split_point} (after {manifest['layer']}): "
              f"sends {cut}", highlight=False, markup=False, soft_wrap=True)
    for path in (result.head, result.tail, out_dir / "manifest.json"):
        out.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", highlight=False,
                  markup=False)
