"""The model zoo. Each model is built by Hydra from `conf/model/<name>.yaml` (`_target_`), with
`in_channels`, `num_classes` and `image_size` supplied from the prepared data."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv blocks (conv-BN-ReLU-pool), then a small classifier head."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.25,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        height, width = image_size
        prev = in_channels
        for ch in channels:
            layers += [
                nn.Conv2d(prev, ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(ch),
                nn.ReLU(inplace=True),
            ]
            if height >= 2 and width >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            prev = ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(prev * height * width, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Fully connected layers on the flattened image."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.2,
    ):
        super().__init__()
        prev = in_channels * image_size[0] * image_size[1]
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = width
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
