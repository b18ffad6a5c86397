"""Prepare an image folder (the images kind's side of stage `prepare`): validate the raw image
folder and make a stratified train/val/test split.

Outputs (all written atomically): outputs/prepared/{train,val,test}.npz with uint8 pixels
[N, C, H, W] and int64 labels, written in chunks of images so that a dataset larger than memory
prepares (and trains, see loader.py) without loading whole, and meta.json with the class list, the per-channel normalization
statistics of the training split, the counts and the file list of every split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ...core.io import atomic_dir, write_json
from ...pipeline.data import discover, load_pixels, stratified_split
from ...pipeline.splits import SplitWriter

CHUNK = 512  # images loaded at a time


def prepare(cfg: DictConfig, out_dir: Path, chunk: int = CHUNK) -> dict[str, Any]:
    data = cfg.data
    height, width = (int(v) for v in data.image_size)
    channels = int(data.channels)
    dataset = discover(data.root, list(data.extensions), int(data.min_images_per_class))
    splits = stratified_split(dataset.labels, data.split.val, data.split.test, data.split.seed)

    stats = PixelStats(channels)
    train_digests: set[bytes] = set()
    duplicates = 0
    with atomic_dir(out_dir) as tmp:
        # Image by image, chunk by chunk: a split never sits in memory whole (splits.py).
        for name, idx in splits.items():  # train first: the leakage check needs its digests
            with SplitWriter(tmp / f"{name}.npz", len(idx), (channels, height, width)) as out:
                for start in range(0, len(idx), chunk):
                    part = idx[start : start + chunk]
                    files = [dataset.files[i] for i in part]
                    pixels = load_pixels(files, height, width, channels, data.resize)
                    out.write(pixels, dataset.labels[part])
                    digests = [hashlib.sha1(image.tobytes()).digest() for image in pixels]
                    if name == "train":
                        stats.add(pixels)
                        train_digests.update(digests)
                    else:  # val/test images pixel-identical to a training image: leakage
                        duplicates += sum(d in train_digests for d in digests)
        root = Path(data.root)
        mean, std = stats.mean_std()
        meta = {
            "kind": "images",
            "classes": dataset.classes,
            "input": {
                "kind": "images",
                "height": height,
                "width": width,
                "channels": channels,
                "resize": data.resize,
                "mean": [round(float(v), 6) for v in mean],
                "std": [round(float(v), 6) for v in std],
            },
            "counts": {
                name: np.bincount(dataset.labels[idx], minlength=len(dataset.classes)).tolist()
                for name, idx in splits.items()
            },
            "leakage": {"duplicate_images_across_splits": duplicates},
            "files": {
                name: [dataset.files[i].relative_to(root).as_posix() for i in idx]
                for name, idx in splits.items()
            },
        }
        write_json(tmp / "meta.json", meta)
    return meta


class PixelStats:
    """Per-channel mean and std of uint8 images in [0, 1], summed exactly in integers."""

    def __init__(self, channels: int):
        self.total = np.zeros(channels, dtype=np.uint64)
        self.squares = np.zeros(channels, dtype=np.uint64)
        self.count = 0

    def add(self, pixels: np.ndarray) -> None:
        wide = pixels.astype(np.uint64)
        self.total += wide.sum(axis=(0, 2, 3))
        self.squares += (wide * wide).sum(axis=(0, 2, 3))
        self.count += pixels.shape[0] * pixels.shape[2] * pixels.shape[3]

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total.astype(np.float64) / self.count
        var = self.squares.astype(np.float64) / self.count - mean * mean
        return mean / 255.0, np.maximum(np.sqrt(np.maximum(var, 0.0)) / 255.0, 1e-6)


def describe(meta: dict[str, Any]) -> str:
    sizes = ", ".join(f"{k} {sum(v)}" for k, v in meta["counts"].items())
    return (
        f"prepare: {len(meta['classes'])} classes; {sizes}; "
        f"{meta['leakage']['duplicate_images_across_splits']} cross-split duplicates"
    )
