"""The tasks' PyTorch modules: the trained head and the exported one (imported lazily)."""

from __future__ import annotations

import torch


class WithProbabilities(torch.nn.Module):
    """A classifier's deployed graph: logits and their softmax."""

    output_names = ("logits", "probabilities")

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


class Standardized(torch.nn.Module):
    """A regression network's output in the target's units: the network predicts the target
    standardized by the training split's mean and std (well scaled for any target), this adds
    them back. Both are buffers: saved with the weights and inside the exported graph."""

    def __init__(self, model: torch.nn.Module, mean: float, std: float):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, :1] * self.std + self.mean


class WithPrediction(torch.nn.Module):
    """A regression model's deployed graph: one output, the prediction [N, 1]."""

    output_names = ("prediction",)

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.model(x),)
