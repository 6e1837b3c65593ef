"""Image classifiers. Every classifier exposes `embed(x)` (penultimate features) and `head`
(the last `nn.Linear`), so attacks, probes and neuron-level methods work on any of them.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """The LRA-NPP paper's MNIST CNN: conv 32 → conv 64 → max-pool → fc 512 → fc classes.

    `torch.flatten` is called in `forward` (not an `nn.Flatten` module) because captum's LRP
    has no rule for `nn.Flatten`. Each ReLU is its own module so LRP hooks stay unambiguous.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 widths: tuple[int, int] = (32, 64), hidden: int = 512) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3), nn.ReLU(),
            nn.Conv2d(widths[0], widths[1], 3), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = (image_size - 4) // 2
        self.fc1 = nn.Linear(widths[1] * side * side, hidden)
        self.relu = nn.ReLU()
        self.head = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.fc1(torch.flatten(self.features(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class ResNet18(nn.Module):
    """torchvision ResNet-18 (random init, no downloads) adapted to small images:
    a 3×3 stem with stride 1 and no max-pool, as is usual for 28–32 px inputs."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        self.head = net.fc
        net.fc = nn.Identity()
        self.body = net
        self.image_size = image_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))
