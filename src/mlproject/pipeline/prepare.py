"""Stage `prepare`: validate the raw image folder and make a stratified train/val/test split.

Outputs (all written atomically): outputs/prepared/{train,val,test}.npz with uint8 pixels
[N, C, H, W] and int64 labels, and meta.json with the class list, the per-channel normalization
statistics of the training split, the counts and the file list of every split.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ..core.io import atomic_dir, write_json
from .config import ConfigError, load_params
from .data import DataError, discover, load_pixels, stratified_split

OUT_DIR = Path("outputs/prepared")


def prepare(cfg: DictConfig, out_dir: Path = OUT_DIR) -> dict[str, Any]:
    data = cfg.data
    height, width = (int(v) for v in data.image_size)
    dataset = discover(data.root, list(data.extensions), int(data.min_images_per_class))
    pixels = load_pixels(dataset.files, height, width, int(data.channels), data.resize)
    splits = stratified_split(dataset.labels, data.split.val, data.split.test, data.split.seed)

    train_x = pixels[splits["train"]].astype(np.float64) / 255.0
    mean = train_x.mean(axis=(0, 2, 3))
    std = np.maximum(train_x.std(axis=(0, 2, 3)), 1e-6)
    root = Path(data.root)
    meta = {
        "classes": dataset.classes,
        "input": {
            "height": height,
            "width": width,
            "channels": int(data.channels),
            "resize": data.resize,
            "mean": [round(float(v), 6) for v in mean],
            "std": [round(float(v), 6) for v in std],
        },
        "counts": {
            name: np.bincount(dataset.labels[idx], minlength=len(dataset.classes)).tolist()
            for name, idx in splits.items()
        },
        "leakage": {"duplicate_images_across_splits": _cross_split_duplicates(pixels, splits)},
        "files": {
            name: [dataset.files[i].relative_to(root).as_posix() for i in idx]
            for name, idx in splits.items()
        },
    }
    with atomic_dir(out_dir) as tmp:
        for name, idx in splits.items():
            # np.savez (not _compressed) stores fixed zip timestamps: identical bytes every run.
            np.savez(tmp / f"{name}.npz", x=pixels[idx], y=dataset.labels[idx])
        write_json(tmp / "meta.json", meta)
    return meta


def _cross_split_duplicates(pixels: np.ndarray, splits: dict[str, np.ndarray]) -> int:
    """How many val/test images are pixel-identical to a training image (data leakage check)."""
    train = {hashlib.sha1(pixels[i].tobytes()).digest() for i in splits["train"]}
    return sum(
        hashlib.sha1(pixels[i].tobytes()).digest() in train
        for name in ("val", "test")
        for i in splits[name]
    )


def main() -> int:
    try:
        meta = prepare(load_params())
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{k} {sum(v)}" for k, v in meta["counts"].items())
    print(
        f"prepare: {len(meta['classes'])} classes; {sizes}; "
        f"{meta['leakage']['duplicate_images_across_splits']} cross-split duplicates"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
