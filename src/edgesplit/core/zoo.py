"""The model zoo: the thesis's three networks and a ResNet-18, defined here, no downloads.

Architectures are written as data (a config list and one builder, as torchvision does), with the
same layer structure as the thesis's Tables 5.1 to 5.3. Weights are deterministic: each builder
seeds its own random stream, so two builds are identical and the caller's RNG is untouched. The
MNIST CNN loads trained weights shipped with the package (see ``scripts/train_mnist_cnn.py``).

>>> from edgesplit.core.zoo import build_model, sample_input
>>> model = build_model("mnist_cnn")
>>> model(sample_input("mnist_cnn")).shape
torch.Size([1, 10])
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import torch
from torch import nn

from edgesplit.errors import UnknownModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
MNIST_WEIGHTS = "mnist_cnn.safetensors"


class AlexNet(nn.Module):
    """AlexNet as the PyTorch community defines it (Krizhevsky's 2014 variant): 19 layers."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


VGG16_CONFIG: list[int | str] = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
]


class VGG(nn.Module):
    """A VGG network from its config list (ints are 3x3 conv widths, "M" a 2x2 max pool)."""

    def __init__(self, config: list[int | str], num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16(num_classes: int = 1000) -> nn.Module:
    """VGG16 (configuration D): 37 layers."""
    return VGG(VGG16_CONFIG, num_classes)


def mnist_cnn() -> nn.Module:
    """The MNIST CNN of the thesis's Table 5.2 (5x5 kernels): 9 layers."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 10, kernel_size=5)),
        ("pool1", nn.MaxPool2d(kernel_size=2)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(10, 20, kernel_size=5)),
        ("pool2", nn.MaxPool2d(kernel_size=2)),
        ("flatten", nn.Flatten(1)),
        ("fc1", nn.Linear(320, 50)),
        ("relu2", nn.ReLU()),
        ("fc2", nn.Linear(50, 10)),
        ("softmax", nn.Softmax(dim=1)),
    ]))


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block: the branch that makes ResNet a DAG, not a chain."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with basic blocks; ``blocks=(2, 2, 2, 2)`` is ResNet-18."""

    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages: list[nn.Module] = []
        channels = 64
        for i, count in enumerate(blocks):
            width = 64 * 2**i
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(channels, width, stride)]
            stage += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> nn.Module:
    """ResNet-18: a DAG with eight residual joins."""
    return ResNet((2, 2, 2, 2), num_classes)


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry: how to build the network and what its input looks like."""

    name: str
    description: str
    builder: Callable[[], nn.Module]
    image_size: int  # inputs are square images of this side, after resizing
    channels: int  # 3 for RGB, 1 for grey
    mean: tuple[float, ...]
    std: tuple[float, ...]
    seed: int = 0

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.channels, self.image_size, self.image_size)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("alexnet", "AlexNet, 19 layers (thesis Table 5.1)", AlexNet, 224, 3,
                  IMAGENET_MEAN, IMAGENET_STD, seed=1),
        ModelSpec("vgg16", "VGG16, 37 layers (thesis Table 5.3)", vgg16, 256, 3,
                  IMAGENET_MEAN, IMAGENET_STD, seed=2),
        ModelSpec("mnist_cnn", "MNIST CNN, 9 layers (thesis Table 5.2), trained on digits",
                  mnist_cnn, 28, 1, MNIST_MEAN, MNIST_STD, seed=3),
        ModelSpec("resnet18", "ResNet-18, a DAG with residual branches", resnet18, 224, 3,
                  IMAGENET_MEAN, IMAGENET_STD, seed=4),
    )
}


def model_names() -> list[str]:
    return list(MODELS)


def get_spec(name: str) -> ModelSpec:
    """The zoo entry called ``name``; an unknown name raises with the list of known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModel(
            f"unknown model {name!r}: expected one of {', '.join(MODELS)}"
        ) from None


def build_model(name: str) -> nn.Module:
    """Build a zoo model in eval mode with its deterministic (or, for MNIST, trained) weights."""
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = spec.builder()
    if name == "mnist_cnn":
        model.load_state_dict(_mnist_weights()[0])
    return model.requires_grad_(False).eval()


def sample_input(name: str) -> torch.Tensor:
    """The model's fixed sample input, already resized and normalised (batch of one)."""
    spec = get_spec(name)
    if name == "mnist_cnn":
        image = _mnist_weights()[1][0]  # a held-out digit, 28x28 in [0, 1]
        pixels = image.numpy()[None, :, :]
    else:
        pixels = synthetic_image(spec.image_size)
    return normalise(pixels, spec)


def calibration_inputs(name: str) -> torch.Tensor:
    """A few inputs to check that a lossy codec keeps the model's top-1 prediction."""
    spec = get_spec(name)
    if name == "mnist_cnn":
        images = _mnist_weights()[1]
        return torch.cat([normalise(img.numpy()[None], spec) for img in images])
    return torch.cat([normalise(synthetic_image(spec.image_size, phase), spec)
                      for phase in (0.0, 1.3, 2.6)])


def normalise(pixels: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """(C, H, W) pixels in [0, 1] to a normalised (1, C, H, W) float32 tensor."""
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    array = (pixels.astype(np.float32) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(array[None]))


def synthetic_image(size: int, phase: float = 0.0) -> np.ndarray:
    """A deterministic RGB scene (sky, river, banks) in [0, 1], shape (3, size, size).

    Written with closed-form arithmetic, no RNG, so it is the same on every machine and version.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    river = 0.5 + 0.5 * np.sin(6 * math.pi * x + 3 * y + phase)
    banks = np.clip(1.5 * np.abs(y - 0.6 - 0.1 * np.sin(4 * math.pi * x + phase)), 0, 1)
    red = 0.25 + 0.5 * banks * (0.6 + 0.4 * river)
    green = 0.35 + 0.4 * (1 - y) * banks + 0.1 * river
    blue = 0.3 + 0.6 * (1 - banks) * river + 0.1 * (1 - y)
    return np.clip(np.stack([red, green, blue]), 0.0, 1.0).astype(np.float32)


@cache
def _mnist_weights() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The trained state dict and the held-out sample digits shipped beside it."""
    from safetensors.torch import load

    blob = (resources.files("edgesplit") / "data" / MNIST_WEIGHTS).read_bytes()
    tensors = load(blob)
    samples = tensors.pop("samples").to(torch.float32) / 255.0
    return tensors, samples


def digits_to_mnist(images: np.ndarray) -> torch.Tensor:
    """scikit-learn's 8x8 digits (values 0..16) as MNIST-like 28x28 images in [0, 1].

    MNIST centres a 20x20 digit in a 28x28 frame; so do we, with bilinear upscaling.
    """
    small = torch.as_tensor(np.asarray(images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    big = torch.nn.functional.interpolate(small, size=(20, 20), mode="bilinear",
                                          align_corners=False)
    return torch.nn.functional.pad(big, (4, 4, 4, 4)).clamp(0.0, 1.0)[:, 0]
