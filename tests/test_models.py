"""Model sources and the model digest (``edgesplit.models``)."""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from edgesplit.cli import main
from edgesplit.cloud.decoding import decode_offload
from edgesplit.cloud.errors import status_of
from edgesplit.cloud.service import CloudService
from edgesplit.core.splitting import SplitModel
from edgesplit.core.zoo import build_split
from edgesplit.errors import EdgesplitError, ModelSourceError, ModelVersionMismatch
from edgesplit.models.digest import model_digest
from edgesplit.models.sources import load_model
from edgesplit.testbed.processes import free_port


class Small(nn.Module):
    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=stride, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.LazyLinear(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def small(seed: int = 0, stride: int = 1) -> SplitModel:
    torch.manual_seed(seed)
    x = torch.randn(1, 3, 8, 8)
    module = Small(stride).eval()
    module(x)  # materialise the lazy layer
    return SplitModel(module, x)


@pytest.mark.fast
def test_the_digest_names_the_weights_and_the_graph() -> None:
    digest = model_digest(small())
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert model_digest(small()) == digest  # the same weights built again
    assert model_digest(small(seed=1)) != digest  # other weights
    assert model_digest(small(stride=2)) != digest  # other hyperparameters, other cuts

    split = small()
    conv = split.graph_module().get_submodule("conv")
    assert isinstance(conv, nn.Conv2d)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] += 1e-6
    assert model_digest(split) != digest  # one weight changed a little

    split = small()
    split.graph_module().get_buffer("bn.running_mean").add_(1.0)
    assert model_digest(split) != digest  # a buffer counts as a weight

    split = small()
    assert model_digest(split) == digest
    split.swap_module("fc", nn.Sequential(split.called_modules()["fc"]))
    assert model_digest(split) == digest  # taken once: a faster kernel is the same model


class Offset(nn.Module):
    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(4, dtype=dtype))

    offset: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


@pytest.mark.fast
def test_the_dtype_counts_though_the_bytes_might_not() -> None:
    x = torch.ones(1, 4)
    # Four zero bytes each way: only the dtype tells the two apart.
    assert model_digest(SplitModel(Offset(torch.float32), x)) != model_digest(
        SplitModel(Offset(torch.int32), x))


def test_the_digest_is_the_same_in_another_process() -> None:
    here = model_digest(build_split("mnist_cnn"))
    there = subprocess.run(
        [sys.executable, "-c", "from edgesplit.core.zoo import build_split; "
         "from edgesplit.models.digest import model_digest; "
         "print(model_digest(build_split('mnist_cnn')))"],
        capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    assert there == here


# -- model sources ------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "my_net.py"


def example_net() -> nn.Module:
    """The README's own network (docs/examples/my_net.py), built here as the script builds it."""
    namespace: dict[str, Any] = {}
    exec(compile(EXAMPLE.read_text(), str(EXAMPLE), "exec"), namespace)
    torch.manual_seed(0)
    module: nn.Module = namespace["MyNet"]().eval()
    return module


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """The example network exported to a .pt2 file, and the module it came from."""
    module = example_net()
    path = tmp_path_factory.mktemp("program") / "my_net.pt2"
    torch.export.save(torch.export.export(module, (torch.randn(1, 3, 32, 32),)), path)
    return path, module


def test_a_program_file_splits_along_the_modules_it_was_exported_from(
        program: tuple[Path, nn.Module]) -> None:
    path, module = program
    loaded = load_model(str(path))
    assert loaded.name == "my_net" and not loaded.in_zoo
    assert [(layer.name, layer.type) for layer in loaded.split.layers[:4]] == [
        ("features.0", "Conv2d"), ("features.1", "ReLU"), ("features.2", "MaxPool2d"),
        ("features.3", "Conv2d")]
    assert loaded.split.layers[-1].name == "classifier"
    assert list(loaded.sample.shape) == [1, 3, 32, 32]
    x = torch.randn(2, 3, 32, 32)  # a batch, though exported at one
    with torch.inference_mode():
        expected = module(x)
        for sp in range(loaded.split.n_layers + 1):
            out = loaded.split.tail(loaded.split.head(x, sp), sp)
            assert isinstance(out, torch.Tensor) and torch.allclose(out, expected, atol=1e-5)
    assert load_model(str(path)).digest == loaded.digest  # loaded again: the same version
    with pytest.raises(ModelSourceError, match="exported for input shape"):
        load_model(str(path), input_shape=[1, 3, 64, 64])


def tampered(path: Path, out: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """A copy of the archive ``path`` with each member ``change``d (None: left out)."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as copy:
        for name in source.namelist():
            content = change(name, source.read(name))
            if content is not None:
                copy.writestr(name, content)
    return out


class Trap:
    """Unpickling this leaves a file behind: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "unpickled"))


def test_nothing_in_a_program_file_is_unpickled(program: tuple[Path, nn.Module],
                                                tmp_path: Path) -> None:
    path, _ = program
    marker = tmp_path / "unpickled"
    trap = pickle.dumps(Trap(marker))
    # torch.export.load would unpickle the example inputs (weights_only=False when the safe
    # load fails, as it does for this): edgesplit drops them unread, and the program loads.
    with_trap = tampered(path, tmp_path / "trap.pt2",
                         lambda name, data: trap if "sample_inputs" in name else data)
    assert load_model(str(with_trap)).name == "trap"
    assert not marker.exists()

    def pickled_weight(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            for payload in config["config"].values():
                payload["use_pickle"] = True
            return json.dumps(config).encode()
        return data

    weights = tampered(path, tmp_path / "weights.pt2", pickled_weight)
    with pytest.raises(ModelSourceError, match="pickled object"):
        load_model(str(weights))
    root = zipfile.ZipFile(path).namelist()[0].split("/")[0]
    compiled = tampered(path, tmp_path / "compiled.pt2", lambda name, data: data)
    with zipfile.ZipFile(compiled, "a") as archive:
        archive.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ModelSourceError, match="compiled code"):
        load_model(str(compiled))
    assert not marker.exists()


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not a torch.export program"),
    (pickle.dumps({"weights": [1, 2]}), "not a torch.export program"),
    (b"\x80\x04not even a pickle", "not a torch.export program"),
])
def test_a_file_that_is_no_program_is_one_line(tmp_path: Path, content: bytes,
                                               message: str) -> None:
    path = tmp_path / "bad.pt2"
    path.write_bytes(content)
    with pytest.raises(ModelSourceError, match=message) as caught:
        load_model(str(path))
    assert "\n" not in str(caught.value)


def test_other_broken_sources_are_one_line(program: tuple[Path, nn.Module],
                                           tmp_path: Path) -> None:
    path, module = program
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    weights_only = tmp_path / "weights.pt2"
    torch.save(module.state_dict(), weights_only)  # a zip archive, but not a program
    two_inputs = tmp_path / "two.pt2"
    torch.export.save(torch.export.export(TwoInputs(), (torch.ones(1, 2), torch.ones(1, 2))),
                      two_inputs)
    pickled = tmp_path / "pickled.pt"
    torch.save(module.state_dict(), pickled)  # the usual mistake: torch.save, not .export
    here = __name__
    for source, message in [
        (str(truncated), "truncated"),
        (str(weights_only), "no archive_format pt2"),
        (str(two_inputs), "takes 2 inputs"),
        (str(tmp_path / "missing.pt2"), "cannot read"),
        (f"{here}:raising_factory", "raised RuntimeError: no weights here"),
        (f"{here}:no_such_factory", rf"{here}:no_such_factory: the module {here} \(.*"
         r"test_models.py\) has no function no_such_factory"),
        (f"{here}:not_a_module", "returned str"),
        (f"{here}:example_net", "returned no sample input: give its shape with --input-shape"),
        ("no_such_package.nets:make", r"cannot import no_such_package.nets:make: "
         r"ModuleNotFoundError: No module named 'no_such_package' \(the module must be "
         r"importable: for no_such_package/nets.py in the current folder, run with "
         r"PYTHONPATH=.\)"),
        ("not a model", "unknown model 'not a model': expected one of alexnet"),
        (str(pickled), r"pickled.pt is not a torch.export program file \(\*.pt2\): edgesplit "
         r"never loads torch.save's pickles; save the model with torch.export.save\(.*"
         r"'pickled.pt2'\)"),
        ("missing.pth", "missing.pth is not a torch.export program file"),
    ]:
        with pytest.raises(EdgesplitError, match=message) as caught:
            load_model(source)
        assert "\n" not in str(caught.value)
    made = load_model(f"{here}:example_net", input_shape=[1, 3, 32, 32])
    assert made.name == "example_net" and made.split.layers[0].name == "features.0"


def test_a_factory_missing_a_dependency_is_not_told_about_the_python_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "needs_a_dependency.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelSourceError) as caught:
        load_model("needs_a_dependency:make")
    assert str(caught.value) == ("cannot import needs_a_dependency:make: ModuleNotFoundError: "
                                 "No module named 'no_such_dependency'")


class TwoInputs(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


def raising_factory() -> nn.Module:
    raise RuntimeError("no weights here")


def not_a_module() -> str:
    return "a model"


def test_a_broken_model_file_is_one_line_and_exit_2_on_every_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.pt2"
    bad.write_bytes(b"PK\x03\x04 not really")
    for args in (["profile", str(bad)], ["plan", str(bad)],
                 ["edge", "run", "--model", str(bad), "--sample"],
                 ["cloud", "serve", "--models", str(bad), "--port", str(free_port())]):
        assert main(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "broken.pt2 is not a torch.export program" in lines[0], args


def test_a_cloud_refuses_another_version_on_both_routes_and_checks_nothing_without_one() -> None:
    split = small()
    service = CloudService({"small": split})
    digest = model_digest(split)
    assert status_of(ModelVersionMismatch("")) == 409
    service.check_digest("small", digest)
    service.check_digest("small", None)  # a plain OIP client
    with pytest.raises(ModelVersionMismatch, match="not the version served here"):
        service.check_digest("small", model_digest(small(seed=1)))
    body = {"tensor": base64.b64encode(torch.zeros(1, 3, 8, 8).numpy().tobytes()).decode(),
            "splitting_point": 0, "model": "small"}
    decode_offload(service, json.dumps(body).encode())
    with pytest.raises(ModelVersionMismatch):
        decode_offload(service, json.dumps(body | {"model_digest": "sha256:0"}).encode())
