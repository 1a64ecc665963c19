from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from edgesplit.core import zoo
from edgesplit.core.splitting import SplitModel
from edgesplit.errors import InvalidSplitPoint, ModelNotSplittable, WireFormatError

# Pure (no server, no subprocess), and fast but for the exhaustive check of every split point
# of the big models (minutes on a busy machine): that one stays out of the quick tier.
FAST = pytest.mark.fast

SplitFactory = Callable[[str], SplitModel]


@pytest.mark.parametrize("name", zoo.model_names())
def test_every_split_point_reproduces_the_full_model(name: str, split_model: SplitFactory) -> None:
    split = split_model(name)
    x = zoo.sample_input(name)
    with torch.inference_mode():
        expected = zoo.build_model(name)(x)
    for sp in range(split.n_layers + 1):
        sent = split.head(x, sp)
        assert [tuple(t.shape) for t in sent] == [s.shape for s in split.split_points[sp].tensors]
        assert torch.equal(split.tail(sent, sp), expected), f"{name} split point {sp}"


@FAST
@pytest.mark.parametrize(("name", "layers"),
                         [("alexnet", 19), ("vgg16", 37), ("mnist_cnn", 9), ("resnet18", 68)])
def test_layer_counts_match_the_thesis(name: str, layers: int, split_model: SplitFactory) -> None:
    split = split_model(name)
    assert split.n_layers == layers
    assert len(split.split_points) == layers + 1
    assert all(layer.type not in {"Dropout", "Flatten", "flatten"} for layer in split.layers)


@FAST
def test_alexnet_split_points_follow_table_5_1(split_model: SplitFactory) -> None:
    split = split_model("alexnet")
    assert [layer.type for layer in split.layers[:5]] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU"]
    assert [layer.type for layer in split.layers[-6:]] == [
        "AdaptiveAvgPool2d", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    after_pool = split.split_points[14]
    assert after_pool.layer == "avgpool"
    # The flatten travels with the Linear after it: the cut sends 256x6x6 float32.
    assert after_pool.tensors[0].shape == (1, 256, 6, 6)
    assert after_pool.offload_bytes == 36_864
    assert split.split_points[0].offload_bytes == 3 * 224 * 224 * 4
    assert split.split_points[19].offload_bytes == 1000 * 4


@FAST
def test_mnist_split_points_follow_table_5_2(split_model: SplitFactory) -> None:
    split = split_model("mnist_cnn")
    assert [layer.type for layer in split.layers] == [
        "Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "Linear", "ReLU", "Linear",
        "Softmax"]
    assert [sp.offload_bytes for sp in split.split_points] == [
        28 * 28 * 4, 10 * 24 * 24 * 4, 10 * 12 * 12 * 4, 10 * 12 * 12 * 4, 20 * 8 * 8 * 4,
        320 * 4, 50 * 4, 50 * 4, 10 * 4, 10 * 4]


@FAST
def test_a_residual_cut_sends_both_branches(split_model: SplitFactory) -> None:
    split = split_model("resnet18")
    widths = [len(sp.tensors) for sp in split.split_points]
    assert max(widths) == 2 and min(widths) == 1
    inside_block = next(sp for sp in split.split_points if len(sp.tensors) == 2)
    assert inside_block.offload_bytes == sum(t.nbytes for t in inside_block.tensors)


@FAST
def test_timings_have_one_entry_per_layer_run(split_model: SplitFactory) -> None:
    split = split_model("mnist_cnn")
    x = zoo.sample_input("mnist_cnn")
    head_times: list[float] = []
    tail_times: list[float] = []
    split.tail(split.head(x, 4, head_times), 4, tail_times)
    assert len(head_times) == 4 and len(tail_times) == 5
    assert all(t >= 0 for t in head_times + tail_times)


@FAST
def test_tail_accepts_any_batch_size(split_model: SplitFactory) -> None:
    split = split_model("mnist_cnn")
    batch = zoo.calibration_inputs("mnist_cnn")
    out = split.tail(split.head(batch, 5), 5)
    assert out.shape == (len(batch), 10)
    assert torch.equal(out.argmax(1), split(batch).argmax(1))


@FAST
@pytest.mark.parametrize("sp", [-1, 10, 2.5, "3"])
def test_split_points_out_of_range_are_refused(sp: object, split_model: SplitFactory) -> None:
    with pytest.raises(InvalidSplitPoint, match="from 0 to 9"):
        split_model("mnist_cnn").head(zoo.sample_input("mnist_cnn"), sp)  # type: ignore[arg-type]


@FAST
def test_wrong_tensors_are_refused_with_what_was_expected(split_model: SplitFactory) -> None:
    split = split_model("mnist_cnn")
    with pytest.raises(WireFormatError, match=r"expected shape \[1, 10, 12, 12\]"):
        split.tail(torch.zeros(1, 10, 12, 13), 2)
    with pytest.raises(WireFormatError, match="expected dtype float32, got float64"):
        split.tail(torch.zeros(1, 10, 12, 12, dtype=torch.float64), 2)
    with pytest.raises(WireFormatError, match="takes 1 tensor"):
        split.tail([torch.zeros(1, 10, 12, 12)] * 2, 2)
    with pytest.raises(WireFormatError, match="expected shape"):
        split.head(torch.zeros(1, 3, 28, 28), 3)


class ShapeCarrying(nn.Module):
    """Reads the batch size early and uses it late: the size is recomputed after any cut."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.c = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.size(0)
        y = self.b(self.a(x))
        return self.c(y).view(batch, -1)


@FAST
def test_sizes_taken_early_are_recomputed_after_the_cut() -> None:
    module = ShapeCarrying().eval()
    split = SplitModel(module, torch.randn(1, 4))
    assert split.n_layers == 3 and split.unsplittable == ()
    x = torch.randn(5, 4)
    for sp in range(split.n_layers + 1):
        assert all(isinstance(t, torch.Tensor) for t in split.head(x, sp))
        assert torch.equal(split.tail(split.head(x, sp), sp), module(x))


class Untraceable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x  # data-dependent control flow


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.odd = Untraceable()
        self.last = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.odd(self.first(x)))


@FAST
def test_untraceable_parts_fail_clearly_and_work_as_leaf_modules() -> None:
    x = torch.randn(1, 3)
    with pytest.raises(ModelNotSplittable, match="leaf_modules"):
        SplitModel(Wrapper(), x)
    split = SplitModel(Wrapper().eval(), x, leaf_modules=[Untraceable])
    assert [layer.name for layer in split.layers] == ["first", "odd", "last"]


@FAST
def test_models_with_several_inputs_are_refused() -> None:
    class TwoInputs(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    with pytest.raises(ModelNotSplittable, match=r"2 required inputs \(a, b\).*takes one tensor"):
        SplitModel(TwoInputs(), torch.zeros(1))
