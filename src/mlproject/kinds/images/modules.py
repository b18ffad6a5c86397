"""The images kind's PyTorch modules."""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """uint8 pixels -> standardized floats, on the device, batch by batch."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(std).view(1, -1, 1, 1) * 255.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) * self.inv_std
