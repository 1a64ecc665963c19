"""Models the project had never seen, split at every point and run through the real cloud.

The cloud is the real app under a real uvicorn server on loopback; each test sends what the head
computes over HTTP with the Open Inference Protocol and compares every output with the original
module's, exactly (floats to within reassociation), at batch 1 and at batch 3.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import torch
import uvicorn
from torch import nn

from edgesplit.cloud import CloudService, ServerSettings, create_app
from edgesplit.core.splitting import SplitModel
from edgesplit.edge.factory import EdgeOptions, build_runtime
from edgesplit.errors import ModelNotSplittable
from edgesplit.measuring.profiler import profile_model
from edgesplit.testbed.processes import free_port
from edgesplit.wire.codecs import encode_tensor
from edgesplit.wire.protocol import HEADER_LENGTH, encode_request, parse_response

from . import unusual_models as unusual

# quantised_middle makes a quint8 tensor on purpose (item 19); torch says such tensors will go.
pytestmark = pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")


@pytest.fixture(scope="module")
def splits() -> dict[str, SplitModel]:
    return {name: SplitModel(unusual.build(name), unusual.sample(name))
            for name in unusual.MODELS}


@pytest.fixture(scope="module")
def cloud(splits: dict[str, SplitModel]) -> Iterator[str]:
    """The cloud app serving every unusual model, on a real uvicorn server in this process."""
    with serving(splits) as url:
        yield url


@contextlib.contextmanager
def serving(splits: dict[str, SplitModel],
            settings: ServerSettings | None = None) -> Iterator[str]:
    """The cloud app serving ``splits`` on a real uvicorn server in this process: its URL."""
    port = free_port()
    app = create_app(settings or ServerSettings(), service=CloudService(splits))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if httpx.get(f"{url}/v2/health/ready").is_success:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def infer(url: str, model: str, split_point: int, tensors: tuple[torch.Tensor, ...],
          split: SplitModel, binary: bool = True) -> httpx.Response:
    encoded = [encode_tensor(t, name=spec.name)
               for t, spec in zip(tensors, split.split_points[split_point].tensors, strict=True)]
    body, headers = encode_request(encoded, {"split_point": split_point}, binary_output=binary)
    return httpx.post(f"{url}/v2/models/{model}/infer", content=body, headers=headers,
                      timeout=60)


def same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal; floats to within reassociation (the cloud's worker thread may split a batched
    convolution over a different number of threads than this one)."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if not want.is_floating_point():
        return torch.equal(got, want)
    return torch.allclose(got, want, rtol=1e-5, atol=1e-6)


def local_outputs(name: str, split: SplitModel, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return split.output_tensors(unusual.build(name)(x))


@pytest.mark.parametrize("name", list(unusual.MODELS))
def test_every_split_point_through_the_cloud_equals_the_model(
        name: str, splits: dict[str, SplitModel], cloud: str) -> None:
    split = splits[name]
    for batch in (1, 3):
        x = unusual.sample(name, batch)
        expected = local_outputs(name, split, x)
        for sp in range(split.n_layers + 1):
            response = infer(cloud, name, sp, split.head(x, sp), split)
            assert response.status_code == 200, (sp, response.text)
            header, outputs = parse_response(response.content,
                                             response.headers.get(HEADER_LENGTH))
            assert [o["name"] for o in header["outputs"]] == [s.name for s in split.outputs]
            assert len(outputs) == len(expected)
            for got, want in zip(outputs, expected, strict=True):
                assert same(got, want), (name, batch, sp)


def test_every_output_is_named_and_typed_in_the_metadata(cloud: str) -> None:
    meta = httpx.get(f"{cloud}/v2/models/dict_outputs").json()
    assert meta["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 5]},
                               {"name": "label", "datatype": "INT64", "shape": [-1]}]
    pair = httpx.get(f"{cloud}/v2/models/two_outputs").json()
    assert [(o["name"], o["shape"]) for o in pair["outputs"]] == [("output_0", [-1, 4]),
                                                                  ("output_1", [-1, 12])]


def test_json_answers_and_the_thesis_route_carry_every_output(
        splits: dict[str, SplitModel], cloud: str) -> None:
    split = splits["two_outputs"]
    x = unusual.sample("two_outputs")
    expected = local_outputs("two_outputs", split, x)
    response = infer(cloud, "two_outputs", 2, split.head(x, 2), split, binary=False)
    assert response.headers["content-type"] == "application/json"
    _, outputs = parse_response(response.content, None)
    assert all(torch.allclose(g, w, rtol=0, atol=1e-6)
               for g, w in zip(outputs, expected, strict=True))
    thesis = httpx.post(f"{cloud}/offload", timeout=60, json={
        "tensor": base64.b64encode(x.numpy().astype("<f4").tobytes()).decode(),
        "splitting_point": 0, "model": "two_outputs"}).json()
    assert [o["name"] for o in thesis["outputs"]] == ["output_0", "output_1"]
    assert thesis["prediction"] == int(expected[0].argmax())
    assert torch.allclose(torch.tensor(thesis["outputs"][1]["data"]), expected[1].reshape(-1))


def test_the_edge_runtime_returns_every_output_with_and_without_the_cloud(
        splits: dict[str, SplitModel], cloud: str) -> None:
    split = splits["two_outputs"]
    x = unusual.sample("two_outputs")
    expected = unusual.build("two_outputs")(x)
    profile = profile_model("two_outputs", split=split, sample=x, clocks_ghz=(), repeats=1)
    for url in (cloud, None):
        with build_runtime(EdgeOptions("two_outputs", url), split=split,
                           profile=profile) as edge:
            result = edge.infer(x)
        assert result.measurement.finished == ("cloud" if url else "edge")
        assert isinstance(result.output, tuple) and len(result.output) == 2
        assert all(torch.equal(g, w) for g, w in zip(result.output, expected, strict=True))
        assert result.measurement.top1_class == int(expected[0].argmax())


def test_a_dict_output_keeps_its_names_locally(splits: dict[str, SplitModel]) -> None:
    x = unusual.sample("dict_outputs", 2)
    out = splits["dict_outputs"](x)
    assert set(out) == {"scores", "label"}
    assert torch.equal(out["label"], unusual.build("dict_outputs")(x)["label"])


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> list[object]:
        h = self.fc(x)
        return [x, (h, None), {"total": h.sum(dim=1)}]


def test_nested_outputs_come_back_in_the_models_own_plain_structure() -> None:
    model = Nested().eval()
    split = SplitModel(model, torch.randn(1, 4))
    assert [o.name for o in split.outputs] == ["output_0", "output_1", "output_2"]
    x = torch.randn(3, 4)
    for sp in range(split.n_layers + 1):
        out = split.tail(split.head(x, sp), sp)
        assert type(out) is list and type(out[1]) is tuple and type(out[2]) is dict
        assert out[1][1] is None
        assert torch.equal(out[2]["total"], model(x)[2]["total"])


def test_the_split_neither_changes_the_callers_module_nor_follows_it() -> None:
    model: Any = unusual.build("buffers").train()  # its layers: attributes torch cannot type
    stats = model.bn1.running_mean.clone()
    x = unusual.sample("buffers", 4)
    split = SplitModel(model, x[:1])
    assert model.training, "the caller's module was put in eval mode"
    before = split(x)
    model(x)  # the user trains: BatchNorm statistics move in the user's module
    assert not torch.equal(model.bn1.running_mean, stats)
    with torch.no_grad():
        model.gate.mul_(3)
    assert torch.equal(split(x), before)
    assert torch.equal(split(x), unusual.build("buffers")(x))


def test_a_module_handed_over_is_used_as_it_is() -> None:
    model: Any = unusual.build("buffers")  # its layers: attributes torch cannot type
    x = unusual.sample("buffers")
    split = SplitModel(model, x, take=True)  # no copy: the zoo's memory-mapped weights stay so
    before = split(x)
    with torch.no_grad():
        model.gate.mul_(3)
    assert not torch.equal(split(x), before)


def test_values_that_are_not_data_are_recomputed_not_sent(
        splits: dict[str, SplitModel]) -> None:
    positional = splits["positional"]
    for sp in positional.split_points:
        # Only the token activations travel; the positions arange(length) never do.
        assert all(t.batch_dim == 0 and t.dtype != "int64" for t in sp.tensors[sp.split_point
                                                                               == 0:])
    buffers = splits["buffers"]
    for sp in buffers.split_points[1:]:
        assert len(sp.tensors) == 1 and sp.tensors[0].name not in ("gate", "centre")
    lstm = splits["lstm"]
    assert all(t.shape[0] == 1 for sp in lstm.split_points for t in sp.tensors)


def test_data_without_a_batch_dimension_travels(splits: dict[str, SplitModel],
                                                cloud: str) -> None:
    split = splits["batch_statistics"]
    unbatched = [sp.split_point for sp in split.split_points
                 if any(t.batch_dim is None for t in sp.tensors)]
    assert unbatched, "the per-feature peak should cross some cut"
    x = unusual.sample("batch_statistics", 16)  # as many samples as the server's batch limit
    expected = local_outputs("batch_statistics", split, x)
    for sp in unbatched:
        response = infer(cloud, "batch_statistics", sp, split.head(x, sp), split)
        assert response.status_code == 200, response.text
        _, outputs = parse_response(response.content, response.headers.get(HEADER_LENGTH))
        assert same(outputs[0], expected[0])


def test_views_changed_in_place_are_never_separated_by_a_cut(
        splits: dict[str, SplitModel]) -> None:
    split = splits["view_in_place"]
    assert split.n_layers == 3
    assert all("views of one tensor" in note for note in split.unsplittable)
    assert len(split.unsplittable) == 2


def test_an_early_size_is_recomputed_not_a_reason_to_collapse(
        splits: dict[str, SplitModel]) -> None:
    assert splits["early_size"].n_layers == splits["late_size"].n_layers == 6
    assert splits["early_size"].unsplittable == ()


class DataDependentScale(nn.Module):
    """A Python number from the input's data: no cut may carry it, and the split says so."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        peak = x.abs().max().item()
        return self.b(self.a(x)) / peak


def test_a_model_that_collapses_says_why() -> None:
    x = torch.randn(1, 4)
    model = DataDependentScale().eval()
    split = SplitModel(model, x)
    # abs and max may be cut after; from .item() to the end, every cut would carry the float.
    assert [layer.type for layer in split.layers] == ["abs", "max", "truediv"]
    assert len(split.unsplittable) == 3
    assert all("item (a Python float computed from the input's data)" in note
               for note in split.unsplittable)
    for sp in range(split.n_layers + 1):
        assert torch.equal(split.tail(split.head(x, sp), sp), model(x))


class NeedsMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * mask


def test_bad_samples_and_inputs_are_refused_in_one_clear_line() -> None:
    model = unusual.build("se_net")
    with pytest.raises(ModelNotSplittable, match=r"fails on the sample input of shape "
                                                 r"\[1, 3, 7\]") as wrong:
        SplitModel(model, torch.randn(1, 3, 7))
    assert "\n" not in str(wrong.value)
    with pytest.raises(ModelNotSplittable, match=r"shape \[4, 3, 16, 16\].*batch dimension of 1"):
        SplitModel(model, unusual.sample("se_net", 4))
    with pytest.raises(ModelNotSplittable, match=r"2 required inputs \(x, mask\)"):
        SplitModel(NeedsMask(), torch.randn(1, 3))


def test_an_optional_argument_is_left_at_its_default(splits: dict[str, SplitModel]) -> None:
    x = unusual.sample("optional_mask", 2)
    assert torch.equal(splits["optional_mask"](x), unusual.build("optional_mask")(x))


def test_well_formed_tensors_the_model_cannot_take_get_400(cloud: str,
                                                           splits: dict[str, SplitModel]
                                                           ) -> None:
    ids = torch.full((1, 9), 999, dtype=torch.int64)  # token ids past the vocabulary
    response = infer(cloud, "positional", 0, (ids,), splits["positional"])
    assert response.status_code == 400
    assert "cannot run on these tensors" in response.json()["error"]
    assert httpx.get(f"{cloud}/v2/health/ready").json() == {"ready": True}


# -- issue 19: the models that still broke ----------------------------------------------------

@pytest.mark.parametrize("name", ["count_normalised", "count_by_nonzero", "routed",
                                  "routed_by_index"])
def test_counts_and_rows_taken_from_the_data_are_never_assumed(
        name: str, splits: dict[str, SplitModel]) -> None:
    """Items 15 and 17: a tensor whose rows a mask picks never crosses an offered cut, and its
    size is read from the tensor itself, unsplit too, whatever the count at this input."""
    split = splits[name]
    assert any("depends on the data" in note for note in split.unsplittable)
    for sp in split.split_points:
        assert not any(t.free for t in sp.tensors), sp
    model = unusual.build(name)
    for seed in range(5):
        torch.manual_seed(seed)
        x = unusual.MODELS[name][1]().repeat(4, 1, 1) + torch.randn(4, 1, 1)
        assert torch.allclose(split(x), model(x), rtol=1e-5, atol=1e-6), seed


@pytest.mark.parametrize(("name", "shapes"), [("squeezed", [(5,), (3, 5)]),
                                              ("similarity", [(1, 1), (3, 3)])])
def test_outputs_without_a_batch_dimension_are_free(
        name: str, shapes: list[tuple[int, ...]], splits: dict[str, SplitModel],
        cloud: str) -> None:
    """Item 16: the output's shape is the model's, at any batch, locally and from the cloud."""
    split = splits[name]
    assert split.outputs[0].free
    meta = httpx.get(f"{cloud}/v2/models/{name}").json()
    assert meta["outputs"][0]["shape"] == [-1] * len(split.outputs[0].shape)
    for batch, shape in zip((1, 3), shapes, strict=True):
        x = unusual.sample(name, batch)
        assert split(x).shape == shape
        response = infer(cloud, name, 1, split.head(x, 1), split)
        _, [output] = parse_response(response.content, response.headers.get(HEADER_LENGTH))
        assert output.shape == shape


def test_minus_infinity_crosses_the_cut_after_a_masked_fill(
        splits: dict[str, SplitModel], cloud: str) -> None:
    """Item 18: the cut right after nanoGPT's masked_fill carries -inf; the cloud takes it."""
    split = splits["tiny_gpt"]
    x = unusual.sample("tiny_gpt", 2)
    cut = next(sp.split_point for sp in split.split_points if sp.layer_type == "masked_fill")
    sent = split.head(x, cut)
    assert bool(torch.isneginf(sent[-1]).any())
    response = infer(cloud, "tiny_gpt", cut, sent, split)
    assert response.status_code == 200, response.text
    _, [output] = parse_response(response.content, response.headers.get(HEADER_LENGTH))
    assert same(output, local_outputs("tiny_gpt", split, x)[0])


def test_only_what_the_wire_carries_is_offered(splits: dict[str, SplitModel],
                                               cloud: str) -> None:
    """Item 19: bfloat16 cuts are offered (as BF16); complex and quint8 ones are not, and
    every model's metadata answers."""
    for name in ("complex_spectrum", "quantised_middle"):
        split = splits[name]
        assert {t.dtype for sp in split.split_points for t in sp.tensors} == {"float32"}
        assert any("no datatype for" in note for note in split.unsplittable)
    for name in unusual.MODELS:
        assert httpx.get(f"{cloud}/v2/models/{name}").status_code == 200, name
    meta = httpx.get(f"{cloud}/v2/models/bfloat16").json()
    assert meta["outputs"][0]["datatype"] == "BF16"
    assert any(t["datatype"] == "BF16" for sp in meta["parameters"]["split_points"]
               for t in sp["tensors"])


class ComplexOut(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft(x)


def test_a_model_whose_output_cannot_travel_is_refused_in_one_line() -> None:
    with pytest.raises(ModelNotSplittable, match=r"returns fft_fft of dtype complex64.*"
                                                 r"view_as_real"):
        SplitModel(ComplexOut(), torch.randn(1, 4))


def test_a_named_tuple_output_keeps_its_names_and_type(splits: dict[str, SplitModel]) -> None:
    split = splits["named_tuple"]
    assert [o.name for o in split.outputs] == ["logits", "features"]
    x = unusual.sample("named_tuple", 3)
    out = split(x)
    assert isinstance(out, unusual.Prediction)
    assert torch.equal(out.logits, unusual.build("named_tuple")(x).logits)


class Widening(nn.Module):
    """A cut of 160 KB between cuts of a few bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.wide = nn.Linear(4, 40_000)
        self.b = nn.Linear(40_000, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.wide(torch.relu(self.a(x)))))


def test_a_refused_split_point_is_no_outage() -> None:
    """Item 20: a 413 at one split point finishes that inference on the edge, takes that split
    point out of the plans, and leaves the cloud in use at the others."""
    torch.manual_seed(0)
    model = Widening().eval()
    x = torch.randn(1, 4)
    split = SplitModel(model, x)
    wide = next(sp.split_point for sp in split.split_points if sp.layer == "wide")
    profile = profile_model("widening", split=split, sample=x, clocks_ghz=(), repeats=1)
    with serving({"widening": split}, ServerSettings(max_body_mb=0.1)) as url, build_runtime(
            EdgeOptions("widening", url), split=split, profile=profile) as edge:
        refused = edge.infer(x, split_point=wide)
        assert refused.measurement.finished == "edge"
        assert "413" in refused.measurement.fallback
        assert torch.allclose(refused.output, model(x))
        assert edge.cloud_down_reason is None and edge.refused == {wide}
        assert wide == 3 and split.n_layers == 5
        for sp in (1, 2, split.n_layers):  # the cuts before the wide layer and the output
            result = edge.infer(x, split_point=sp)
            assert result.measurement.finished == "cloud", result.measurement.fallback
        planned = edge.infer(x)
        assert planned.measurement.finished == "cloud"
        # Were the cloud to refuse the planned split point too, the next plan avoids it.
        edge.refused.add(planned.measurement.split_point)
        again = edge.infer(x)
        assert again.measurement.replan == "refused"
        assert again.measurement.split_point not in edge.refused
        assert again.measurement.finished == "cloud"
        # And with every split point refused, the edge runs alone, saying why.
        edge.refused.update(range(split.n_layers + 1))
        alone = edge.infer(x)
        assert alone.measurement.finished == "edge"
        assert "refused every split point" in alone.measurement.fallback


@pytest.mark.parametrize("codec", ["raw", "float16", "int8+zstd"])
def test_the_edge_offloads_bfloat16_cuts_and_outputs(codec: str, splits: dict[str, SplitModel],
                                                     cloud: str) -> None:
    """Item 19: the bfloat16 cuts travel as BF16 (or through a lossy codec) and the bf16
    output comes back, with every codec."""
    split = splits["bfloat16"]
    x = unusual.sample("bfloat16", 2)
    expected = unusual.build("bfloat16")(x)
    calibration = unusual.sample("bfloat16", 8)
    profile = profile_model("bfloat16", split=split, sample=x[:1], clocks_ghz=(), repeats=1)
    bf16 = [sp.split_point for sp in split.split_points
            if any(t.dtype == "bfloat16" for t in sp.tensors)]
    assert bf16
    with build_runtime(EdgeOptions("bfloat16", cloud, codecs=tuple({"raw", codec})),
                       split=split, profile=profile, calibration_inputs=calibration) as edge:
        for sp in bf16:
            result = edge.infer(x, split_point=sp)
            assert result.measurement.finished == "cloud", result.measurement.fallback
            assert result.output.dtype == torch.bfloat16
            if result.measurement.codec == "raw":
                assert torch.allclose(result.output.float(), expected.float(), atol=2e-2)


@pytest.mark.parametrize("name", list(unusual.UNTRACEABLE))
def test_a_refusal_points_at_the_users_line_and_the_leaf_to_pass(name: str) -> None:
    """Item 21: what fx cannot trace is refused in one line that quotes the user's source line
    and names the submodule to pass as a leaf; passing it works, at every split point."""
    _, _, line, leaf = unusual.UNTRACEABLE[name]
    model, x = unusual.build(name), unusual.sample(name)
    with pytest.raises(ModelNotSplittable) as refused:
        SplitModel(model, x)
    message = str(refused.value)
    assert "\n" not in message and "unusual_models.py:" in message and line in message
    if leaf is None:
        assert "move that code into a submodule" in message
        return
    assert f"pass leaf_modules=[{leaf.__name__}]" in message
    split = SplitModel(model, x, leaf_modules=[leaf])
    batch = unusual.sample(name, 3)
    for sp in range(split.n_layers + 1):
        assert torch.allclose(split.tail(split.head(batch, sp), sp), model(batch), atol=1e-6)


def test_a_model_failing_on_its_sample_names_the_node_and_the_line() -> None:
    with pytest.raises(ModelNotSplittable, match=r"at conv1 \(unusual_models.py:\d+ "
                                                 r"`y = self.se1\(F.relu\(self.conv1\(x\)\)\)`"):
        SplitModel(unusual.build("se_net"), torch.randn(1, 3, 7))


@pytest.mark.parametrize("name", ["squeezed", "similarity", "count_normalised", "tiny_gpt"])
def test_the_edge_takes_the_clouds_right_answers_at_every_split_point(
        name: str, splits: dict[str, SplitModel], cloud: str) -> None:
    """Items 16 to 18 through the edge runtime: free outputs, data-dependent counts and -inf at a
    cut come back from the cloud as the model's answers, at batch 1 and 3."""
    split = splits[name]
    profile = profile_model(name, split=split, sample=unusual.sample(name), clocks_ghz=(),
                            repeats=1)
    model = unusual.build(name)
    with build_runtime(EdgeOptions(name, cloud), split=split, profile=profile) as edge:
        for batch in (1, 3):
            x = unusual.sample(name, batch)
            for sp in range(split.n_layers + 1):
                result = edge.infer(x, split_point=sp)
                assert result.measurement.finished == "cloud", (sp, result.measurement.fallback)
                assert same(result.output, model(x)), (batch, sp)
        assert edge.cloud_down_reason is None and not edge.refused
