"""Augmentation of the training split, from `conf/augment/` (torchvision.transforms.v2 on tensors).

`augment=none` (the default) changes nothing. `augment=standard`: random resized crop back to the
input size, horizontal flip, colour jitter. Each image of a batch draws its own parameters; the
draws come from a generator seeded by `train.seed` (and the rank), so the same seed gives the same
augmented batches, run after run, in memory or streamed. Validation and test data are never
augmented; the exported model is not either.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError

KEYS = {"name", "random_resized_crop", "hflip", "color_jitter"}


class Augmenter:
    """uint8 [B, C, H, W] -> uint8 [B, C, H, W], each image transformed with its own draw."""

    def __init__(self, transform, seed: int):
        self.transform = transform
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        # torchvision draws from torch's global generator: fork it, seed it from ours, restore it.
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([self.transform(image) for image in batch])


def build_augment(
    cfg: DictConfig | None, image_size: list[int], channels: int, seed: int
) -> Augmenter | None:
    """The augmentation `cfg` (the `augment` section) describes, or None when there is none."""
    if cfg is None:
        return None
    spec: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)
    unknown = set(spec) - KEYS
    if unknown:
        raise ConfigError(
            f"augment: unknown key(s) {sorted(unknown)}; known: {sorted(KEYS)} (conf/augment/)."
        )
    if not any(spec.get(key) for key in KEYS - {"name"}):
        return None  # no step: torchvision (~1.4 s to import) is not loaded at all
    from torchvision.transforms import v2

    steps = []
    crop = spec.get("random_resized_crop")
    if crop:
        steps.append(
            v2.RandomResizedCrop(
                list(image_size),
                scale=tuple(crop.get("scale", (0.08, 1.0))),
                ratio=tuple(crop.get("ratio", (3 / 4, 4 / 3))),
                antialias=True,
            )
        )
    if spec.get("hflip"):
        steps.append(v2.RandomHorizontalFlip(float(spec["hflip"])))
    jitter = spec.get("color_jitter")
    if jitter:
        if channels != 3 and (jitter.get("saturation") or jitter.get("hue")):
            raise ConfigError(
                "augment.color_jitter: saturation and hue need RGB images (data.channels: 3); "
                "set them to 0 for grayscale data."
            )
        try:
            steps.append(v2.ColorJitter(**jitter))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"augment.color_jitter: {exc}") from exc
    if not steps:
        return None
    return Augmenter(v2.Compose(steps), seed)
