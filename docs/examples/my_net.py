"""A network of one's own, exported for edgesplit (README: "Your own model")."""

import torch
from torch import nn


class MyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.classifier = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


if __name__ == "__main__":
    torch.manual_seed(0)
    program = torch.export.export(MyNet().eval(), (torch.randn(1, 3, 32, 32),))
    torch.export.save(program, "my_net.pt2")  # no Python needed to load it again
