"""The halves of a cut as files (``edgesplit export``) and the ONNX Runtime edge engine: each
exported head and tail, loaded back, computes what the split computes, for a chain and for a cut
that carries a residual fork's two tensors."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime
import pytest
import torch
from torch import nn

from edgesplit.cli import main
from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.edge.engines import OnnxRuntimeEngine
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.errors import ModelNotSplittable
from edgesplit.export.bundle import export_halves
from edgesplit.measuring.store import read_profile
from edgesplit.testbed.processes import CloudProcess


class Residual(nn.Module):
    """A stem and one residual block: the cuts inside the block carry two tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.relu(self.bn(self.conv(x))) + x
        return self.head(y.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def residual() -> tuple[SplitModel, torch.Tensor, int]:
    torch.manual_seed(0)
    module = Residual()
    with torch.no_grad():  # buffers that matter
        module.bn.running_mean.uniform_(-0.5, 0.5)  # type: ignore[union-attr]
    sample = torch.randn(1, 3, 12, 12)
    split = SplitModel(module, sample)
    fork = next(p.split_point for p in split.split_points if len(p.tensors) == 2)
    return split, sample, fork


def _ort_run(path: Path, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in session.run(None, {k: v.numpy()
                                                          for k, v in inputs.items()})]


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_exported_halves_compute_what_the_split_computes_across_a_fork(
        residual: tuple[SplitModel, torch.Tensor, int], fmt: str, tmp_path: Path) -> None:
    split, sample, fork = residual
    result = export_halves(split, sample, fork, fmt, tmp_path, model="residual",
                           digest="sha256:" + "0" * 64)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["split_point"] == fork and manifest["export_format"] == fmt
    cut = manifest["head"]["outputs"]
    assert cut == manifest["tail"]["inputs"] and len(cut) == 2
    assert [t["shape"][0] for t in cut] == [-1, -1]  # the batch dimension stays free
    x = torch.randn(3, 3, 12, 12)  # a batch the export never saw
    expected_sent, expected = split.head(x, fork), split(x)
    if fmt == "pt2":
        sent = torch.export.load(result.head).module()(x)
        out = torch.export.load(result.tail).module()(*sent)
    else:
        sent = _ort_run(result.head, {manifest["head"]["inputs"][0]["onnx_name"]: x})
        out = _ort_run(result.tail, {t["onnx_name"]: s for t, s in zip(cut, sent, strict=True)})
    for got, want in zip(sent, expected_sent, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out[0], expected)


def test_onnxruntime_heads_equal_torch_heads_within_float_rounding(
        residual: tuple[SplitModel, torch.Tensor, int]) -> None:
    split, sample, fork = residual
    engine = OnnxRuntimeEngine(split, sample)
    x = torch.randn(2, 3, 12, 12)
    for split_point in (0, fork, split.n_layers):
        timings: list[float] = []
        got = engine.head(x, split_point, timings)
        assert len(timings) == split_point  # spread over the head's layers, for learning
        for mine, torch_s in zip(got, split.head(x, split_point), strict=True):
            torch.testing.assert_close(mine, torch_s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(engine.run(x), split(x), rtol=1e-5, atol=1e-5)


class DataBranch(nn.Module):
    """A layer whose Python branches on the data: fx keeps it whole (a leaf), export cannot."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if bool(x.sum() > 0) else x


def test_a_half_torch_export_cannot_trace_is_one_line(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Linear(4, 4), DataBranch(), nn.Linear(4, 2))
    split = SplitModel(module, torch.ones(1, 4), leaf_modules=[DataBranch])
    with pytest.raises(ModelNotSplittable) as caught:
        export_halves(split, torch.ones(1, 4), 2, "pt2", tmp_path, model="m", digest="")
    assert str(caught.value).startswith("torch.export cannot export the head at split point 2: ")
    assert "\n" not in str(caught.value)


def test_an_onnxruntime_edge_offloads_to_a_real_cloud_and_answers_as_torch(
        cloud: CloudProcess, mnist_profile_file: Path) -> None:
    split = zoo.build_split("mnist_cnn")
    inputs = list(torch.split(zoo.calibration_inputs("mnist_cnn"), 1))[:2]
    options = EdgeOptions("mnist_cnn", cloud.url, engine="onnxruntime")
    with build_runtime(options, split=split, profile=read_profile(mnist_profile_file)) as edge:
        results = edge.run(inputs, count=2, split_point=4)
    for x, result in zip(inputs, results, strict=True):
        torch.testing.assert_close(result.output, split(x), rtol=1e-5, atol=1e-5)
        assert result.measurement.finished == "cloud" and result.measurement.split_point == 4


def test_export_command_writes_a_zoo_models_halves_and_refuses_an_empty_half(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "halves"
    assert main(["export", "--model", "mnist_cnn", "--split-point", "4", "--format", "onnx",
                 "--out", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["digest"].startswith("sha256:") and manifest["model"] == "mnist_cnn"
    x = zoo.sample_input("mnist_cnn")
    sent = _ort_run(out / "head.onnx", {manifest["head"]["inputs"][0]["onnx_name"]: x})
    logits = _ort_run(out / "tail.onnx", {manifest["tail"]["inputs"][0]["onnx_name"]: sent[0]})
    assert int(logits[0].argmax()) == int(zoo.build_split("mnist_cnn")(x).argmax())
    n = zoo.MODELS["mnist_cnn"].layers
    assert main(["export", "--model", "mnist_cnn", "--split-point", str(n), "--out",
                 str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"edgesplit: error: split point {n} leaves the tail without layers: export a split "
        f"point from 1 to {n - 1}")
    assert main(["export", "--model", "mnist_cnn", "--split-point", str(n + 1), "--out",
                 str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"edgesplit: error: split point {n + 1} is out of range: the model has {n} layers; "
        f"export a split point from 1 to {n - 1}")
