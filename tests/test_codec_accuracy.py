"""Codec accuracy on real held-out digits: the shipped test set, the measurement and the CLI."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
from safetensors.torch import load

from edgesplit.cli import main
from edgesplit.core import zoo
from edgesplit.core.codec_accuracy import codec_accuracy
from edgesplit.errors import InvalidArgument
from edgesplit.wire.codecs import all_codecs

TOLERANCE = 0.01  # a lossy codec may cost at most one point of accuracy on the 450 digits


def test_the_shipped_test_set_is_exactly_the_digits_held_out_of_training() -> None:
    """The split scripts/train_mnist_cnn.py holds out (and writes with --test-set-only)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, images, _, labels = train_test_split(digits.images, digits.target, test_size=0.25,
                                            random_state=0, stratify=digits.target)
    shipped = load((resources.files("edgesplit") / "data" / zoo.MNIST_TEST_SET).read_bytes())
    assert shipped["images"].dtype == torch.uint8 and shipped["labels"].dtype == torch.uint8
    assert torch.equal(shipped["images"], torch.as_tensor(images).to(torch.uint8))
    assert torch.equal(shipped["labels"], torch.as_tensor(labels).to(torch.uint8))
    inputs, targets = zoo.test_set("mnist_cnn")
    assert inputs.shape == (450, 1, 28, 28) and targets.shape == (450,)
    # The sample digits the weights file carries (rounded to bytes) are the first of these.
    samples = zoo.calibration_inputs("mnist_cnn")
    assert torch.allclose(inputs[:len(samples)], samples, atol=0.51 / 255 / zoo.MNIST_STD[0])


def test_every_codec_keeps_the_accuracy_of_raw_tensors_on_real_digits() -> None:
    rows = codec_accuracy()
    codecs = [c.name for c in all_codecs()]
    assert {(r.split_point, r.codec) for r in rows} == {
        (sp, c) for sp in range(9) for c in codecs}
    raw = {r.split_point: r for r in rows if r.codec == "raw"}
    assert all(r.accuracy >= 0.97 for r in raw.values())  # the trained network, as shipped
    for r in rows:
        assert abs(r.accuracy - raw[r.split_point].accuracy) <= TOLERANCE, r
        assert r.agrees_with_raw >= 1 - TOLERANCE, r
        assert r.raw_bytes == raw[r.split_point].raw_bytes
    int8 = {r.split_point: r.bytes_per_input for r in rows if r.codec == "int8"}
    assert all(int8[sp] == raw[sp].raw_bytes / 4 for sp in raw)  # a byte per float


def test_models_without_a_labelled_test_set_say_which_have_one() -> None:
    with pytest.raises(InvalidArgument, match=r"alexnet has no labelled test set .*synthetic"
                                              r".*use mnist_cnn"):
        zoo.test_set("alexnet")


def test_models_flag_synthetic_weights_and_codecs_prints_accuracy_beside_bytes(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = {row["model"]: row["weights"] for row in json.loads(capsys.readouterr().out)}
    assert rows == {"alexnet": "synthetic", "vgg16": "synthetic", "mnist_cnn": "trained",
                    "resnet18": "synthetic"}
    assert main(["codecs", "--split-point", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["codec"] for r in printed] == [c.name for c in all_codecs()]
    assert {r["split_point"] for r in printed} == {3}
    assert main(["codecs", "--split-point", "3"]) == 0
    table = capsys.readouterr().out
    assert "450 held-out digits, split point 3" in table
    assert "int8+zstd" in table and "0 of 450" in table
    assert main(["codecs", "--split-point", "9"]) == 2
    assert "--split-point must be 0..8" in capsys.readouterr().err
