from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgesplit.core import zoo
from edgesplit.errors import UnknownModel

pytestmark = pytest.mark.fast  # pure: no server, no subprocess (make test-fast)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(UnknownModel) as caught:
        zoo.build_model("lenet")
    assert f"expected one of {', '.join(zoo.MODELS)}" in str(caught.value)
    assert {"alexnet", "vgg16", "mnist_cnn"} <= set(zoo.MODELS)  # the thesis's, at least


@pytest.mark.parametrize("name", ["alexnet", "resnet18"])
def test_weights_are_deterministic_and_leave_the_callers_rng_alone(name: str) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = zoo.build_model(name)
    after = torch.rand(1)
    second = zoo.build_model(name)
    assert torch.equal(before, after)
    for (key, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(),
                                strict=True):
        assert torch.equal(a, b), key


@pytest.mark.parametrize(("name", "shape"), [
    ("alexnet", (1, 3, 224, 224)), ("vgg16", (1, 3, 256, 256)), ("mnist_cnn", (1, 1, 28, 28)),
    ("resnet18", (1, 3, 224, 224)),
])
def test_sample_inputs_have_the_thesis_shapes(name: str, shape: tuple[int, ...]) -> None:
    x = zoo.sample_input(name)
    assert tuple(x.shape) == shape and x.dtype == torch.float32
    assert torch.equal(x, zoo.sample_input(name))


def test_shipped_mnist_weights_classify_held_out_digits() -> None:
    """The accuracy the README reports, on the split scripts/train_mnist_cnn.py holds out."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, images, _, labels = train_test_split(digits.images, digits.target, test_size=0.25,
                                            random_state=0, stratify=digits.target)
    spec = zoo.get_spec("mnist_cnn")
    x = torch.cat([zoo.normalise(img.numpy()[None], spec) for img in zoo.digits_to_mnist(images)])
    with torch.inference_mode():
        predicted = zoo.build_model("mnist_cnn")(x).argmax(1)
    accuracy = (predicted == torch.as_tensor(labels)).float().mean().item()
    assert accuracy >= 0.97


def test_the_mnist_sample_is_a_held_out_digit_the_model_is_sure_of() -> None:
    with torch.inference_mode():
        probabilities = zoo.build_model("mnist_cnn")(zoo.sample_input("mnist_cnn"))
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert probabilities.max().item() > 0.9


@pytest.mark.parametrize("name", zoo.model_names())
def test_declared_layers_and_parameters_match_the_built_network(name: str) -> None:
    """`edgesplit models` shows the declared counts without building anything: keep them true."""
    spec = zoo.get_spec(name)
    split = zoo.build_split(name)
    module = zoo.build_model(name)
    assert (split.n_layers, len(split.split_points)) == (spec.layers, spec.split_points)
    assert sum(p.numel() for p in module.parameters()) == spec.parameters


def test_synthetic_weights_are_generated_once_then_mapped_from_the_cache(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGESPLIT_CACHE_DIR", str(tmp_path))  # not the suite's shared weights
    spec = zoo.get_spec("resnet18")
    first = zoo.build_model("resnet18")
    path = zoo.weights_path(spec, first)
    assert path.exists()
    stamp = path.stat().st_mtime_ns
    second = zoo.build_model("resnet18")
    assert path.stat().st_mtime_ns == stamp  # read, not written again
    generated = zoo._generate_weights(spec)  # what the architecture's own init draws
    for key, tensor in second.state_dict().items():
        assert torch.equal(tensor, generated[key]), key


def test_an_unreadable_weights_cache_is_generated_again(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("EDGESPLIT_CACHE_DIR", str(tmp_path))  # not the suite's shared weights
    first = zoo.build_model("resnet18")
    expected = {key: tensor.clone() for key, tensor in first.state_dict().items()}
    path = zoo.weights_path(zoo.get_spec("resnet18"), first)
    path.unlink()  # a new file, as a cache is replaced: the mapped one must stay whole
    path.write_bytes(b"not a safetensors file")
    again = zoo.build_model("resnet18")
    for key, tensor in again.state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    assert path.stat().st_size > 1_000_000  # rewritten whole
