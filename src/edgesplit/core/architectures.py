"""The zoo's networks as PyTorch modules: the thesis's three and a ResNet-18.

Architectures are written as data (a config list and one builder, as torchvision does), with the
same layer structure as the thesis's Tables 5.1 to 5.3. ``edgesplit.core.zoo`` names them (as
``"edgesplit.core.architectures:alexnet"``) and gives them weights; this module is imported only
when a network is built, so listing the zoo needs no torch.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


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
        logits: torch.Tensor = self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
        return logits


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
        logits: torch.Tensor = self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
        return logits


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
        joined: torch.Tensor = self.relu(out + identity)
        return joined


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
        logits: torch.Tensor = self.fc(torch.flatten(self.avgpool(x), 1))
        return logits


def alexnet(num_classes: int = 1000) -> nn.Module:
    """AlexNet: 19 layers."""
    return AlexNet(num_classes)


def resnet18(num_classes: int = 1000) -> nn.Module:
    """ResNet-18: a DAG with eight residual joins."""
    return ResNet((2, 2, 2, 2), num_classes)
