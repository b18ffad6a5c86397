"""Image preprocessing shared by training and serving (NumPy and Pillow only, no PyTorch).

The model card records the input spec; the server rebuilds it with `InputSpec.from_card` so that
a request is preprocessed exactly as the training images were.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

MODES = {1: "L", 3: "RGB"}


class ImageError(ValueError):
    """An image could not be read or converted; the message names it."""


@dataclass(frozen=True)
class InputSpec:
    height: int
    width: int
    channels: int
    resize: str = "stretch"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> InputSpec:
        spec = card["input"]
        return cls(
            height=spec["height"],
            width=spec["width"],
            channels=spec["channels"],
            resize=spec["resize"],
            mean=tuple(spec["mean"]),
            std=tuple(spec["std"]),
        )

    def to_card(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": "pixel / 255, then (x - mean) / std per channel",
        }


def open_image(source: str | Path | bytes | BinaryIO, name: str | None = None) -> Image.Image:
    """Open and fully decode an image; a corrupt, empty or unknown file raises ImageError."""
    label = name or (str(source) if isinstance(source, (str, Path)) else "image")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"{label}: cannot read image ({exc}). Replace or remove the file."
        ) from exc


def to_pixels(img: Image.Image, height: int, width: int, channels: int, resize: str) -> np.ndarray:
    """Convert to the configured mode and size; returns uint8 [channels, height, width]."""
    if img.mode in ("RGBA", "LA", "P") and channels == 3:
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert(MODES[channels])
    if img.size != (width, height):
        if resize == "pad":
            scale = min(width / img.width, height / img.height)
            new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            resized = img.resize(new, Image.Resampling.BILINEAR)
            canvas = Image.new(img.mode, (width, height))
            canvas.paste(resized, ((width - new[0]) // 2, (height - new[1]) // 2))
            img = canvas
        else:
            img = img.resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def normalize(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 [..., C, H, W] -> float32 scaled to [0, 1] and standardized per channel."""
    x = pixels.astype(np.float32) / 255.0
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return (x - m) / s


def preprocess(
    source: str | Path | bytes | BinaryIO, spec: InputSpec, name: str | None = None
) -> np.ndarray:
    """An image file -> the model's float32 input [C, H, W]."""
    img = open_image(source, name)
    pixels = to_pixels(img, spec.height, spec.width, spec.channels, spec.resize)
    return normalize(pixels, spec.mean, spec.std)
