"""The model zoo. Each model is built by Hydra from `conf/model/<name>.yaml` (`_target_`), with
the input's shape supplied from the prepared data by its kind (mlproject.kinds): images give
`in_channels`, `num_classes` and `image_size`; a table gives `in_features` and `num_classes`."""

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
    """Fully connected layers on the flattened input: an image, or a table's encoded row."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int | None = None,
        image_size: Sequence[int] | None = None,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.2,
        in_features: int | None = None,
    ):
        super().__init__()
        if in_features is None:
            in_features = int(in_channels) * int(image_size[0]) * int(image_size[1])
        prev = in_features
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = width
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
