"""Prepare an image folder (the images kind's side of stage `prepare`): validate the raw image
folder and make a stratified train/val/test split; or, for `task: regression`, read each image's
number from the targets file (targets.py) and make a seeded shuffle split.

Outputs (all written atomically): outputs/prepared/{train,val,test}.npz with uint8 pixels
[N, C, H, W] and int64 labels (float32 targets for regression), written in chunks of images so
that a dataset larger than memory prepares (and trains, see loader.py) without loading whole, and
meta.json with the class list (empty for regression, which adds `task` and `target`), the
per-channel normalization statistics of the training split, the counts and the file list of
every split.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ...core.io import atomic_dir, write_json
from ...pipeline.data import Dataset, discover, load_pixels, random_split, stratified_split
from ...pipeline.splits import SplitWriter
from .targets import discover_targets

CHUNK = 512  # images loaded at a time


def prepare(cfg: DictConfig, out_dir: Path, chunk: int = CHUNK) -> dict[str, Any]:
    data = cfg.data
    height, width = (int(v) for v in data.image_size)
    channels = int(data.channels)
    if data.get("task", "classification") == "regression":  # a number per image (targets.py)
        found = discover_targets(data.root, str(data.targets), list(data.extensions))
        dataset = Dataset([], found.files, found.values)
        splits = random_split(
            len(found.files), data.split.val, data.split.test, data.split.seed, "images", 2
        )
    else:  # class folders
        found = None
        dataset = discover(data.root, list(data.extensions), int(data.min_images_per_class))
        splits = stratified_split(dataset.labels, data.split.val, data.split.test, data.split.seed)

    stats = PixelStats(channels)
    train_digests: set[bytes] = set()
    duplicates = 0
    with atomic_dir(out_dir) as tmp:
        # Image by image, chunk by chunk: a split never sits in memory whole (splits.py).
        for name, idx in splits.items():  # train first: the leakage check needs its digests
            shape = (channels, height, width)
            with SplitWriter(tmp / f"{name}.npz", len(idx), shape, dataset.labels.dtype) as out:
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
            **({} if found is None else {"task": "regression", "target": found.name}),
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
            "counts": _counts(dataset, splits, found),
            "leakage": {"duplicate_images_across_splits": duplicates},
            "files": {
                name: [dataset.files[i].relative_to(root).as_posix() for i in idx]
                for name, idx in splits.items()
            },
        }
        write_json(tmp / "meta.json", meta)
    return meta


def _counts(dataset: Dataset, splits: dict[str, np.ndarray], found) -> dict[str, Any]:
    """Per split: images per class, or for regression the count and range of the targets."""
    if found is None:
        return {
            name: np.bincount(dataset.labels[idx], minlength=len(dataset.classes)).tolist()
            for name, idx in splits.items()
        }
    return {
        name: {
            "n": len(idx),
            "mean": round(float(dataset.labels[idx].astype(np.float64).mean()), 6),
            "min": round(float(dataset.labels[idx].min()), 6),
            "max": round(float(dataset.labels[idx].max()), 6),
        }
        for name, idx in splits.items()
    }


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
    counts = meta["counts"]
    if meta.get("task") == "regression":
        sizes = ", ".join(f"{k} {v['n']}" for k, v in counts.items())
        train = counts["train"]
        what = f"target {meta['target']!r} (train {train['min']:.4g} to {train['max']:.4g})"
    else:
        sizes = ", ".join(f"{k} {sum(v)}" for k, v in counts.items())
        what = f"{len(meta['classes'])} classes"
    return (
        f"prepare: {what}; {sizes}; "
        f"{meta['leakage']['duplicate_images_across_splits']} cross-split duplicates"
    )
