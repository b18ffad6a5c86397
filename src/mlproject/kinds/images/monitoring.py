"""The monitor's side of the images kind (NumPy and Pillow only, no PyTorch).

Images are monitored through five per-image summaries (FEATURES), the same ones the server
writes into each prediction-log record, so the profile and the logs summarize an image alike.

The monitoring protocol, answered by every kind's `monitoring` module
(`mlproject.kinds.for_spec(spec).monitoring`):

    features(spec)                    -> [{"name", "type": "numeric"|"categorical",
                                           "nullable": bool}, ...]  the monitored features
    reference(prepared, spec)         -> {name: values} of the training split
    feeds(prepared, split, card, ...) -> ONNX feeds (name -> array), batch by batch
    record_values(features, spec)     -> one logged record's `features` as values in
                                         features() order (KeyError/TypeError/ValueError
                                         when it does not fit; the monitor names the line)
    read_inputs(path, card)           -> ({name: values}, feeds) of a folder/file of inputs
    UNIT                              -> what one record is ("images", "rows"), for reports

Values: numeric features are float64 arrays (NaN = missing), categorical ones object arrays
of strings ("" = missing).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import ProjectError

UNIT = "images"
FEATURES = ("brightness", "contrast", "dark_fraction", "bright_fraction", "edge_energy")
# On the 0..1 scale a pixel is dark below 0.1 and bright above 0.9: for uint8 values v,
# v / 255 < 0.1 exactly when v <= 25, and v / 255 > 0.9 exactly when v >= 230.
DARK, BRIGHT = 0.1, 0.9
DARK_U8, BRIGHT_U8 = 25, 230
IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".pgm",
    ".ppm",
)
BATCH_SIZE = 1024


class InputError(ProjectError, ValueError):
    """Inputs of the images kind cannot be read; the message names the file."""


# ------------------------------------------------------------------------------ summaries


def image_features(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels [N, C, H, W] (or [N, H, W]) -> float64 [N, len(FEATURES)] summaries on the
    0..1 scale; other dtypes are read as values on the 0..255 scale.

    brightness: mean intensity; contrast: its standard deviation; dark/bright_fraction: share of
    pixels below 0.1 / above 0.9; edge_energy: mean absolute difference between neighbours.

    Vectorized over the batch with 2-D reductions: the server's prediction log
    summarizes thousands of images per pass. Sums of uint8 values are exact in float64, so the
    one-pass variance below equals the two-pass one to rounding.
    """
    p = np.asarray(pixels)
    if p.ndim == 3:
        p = p[None]
    n, c, h, w = p.shape
    flat = p.reshape(n, -1).astype(np.float64)
    m = flat.shape[1]
    mean = flat.sum(axis=1) / m
    var = np.maximum(np.einsum("ij,ij->i", flat, flat) / m - mean * mean, 0.0)
    if p.dtype == np.uint8:
        raw = p.reshape(n, -1)
        dark = np.count_nonzero(raw <= DARK_U8, axis=1)
        bright = np.count_nonzero(raw >= BRIGHT_U8, axis=1)
        planes = p.reshape(n * c, h * w).astype(np.int16)  # differences of uint8 fit int16
    else:
        dark = np.count_nonzero(flat < DARK * 255.0, axis=1)
        bright = np.count_nonzero(flat > BRIGHT * 255.0, axis=1)
        planes = flat.reshape(n * c, h * w)
    # Mean |difference| between vertical, then horizontal, neighbours. Differences are taken
    # on 2-D views (rows of whole planes, then of image rows): numpy is slow on 4-D slices of
    # small images, and small temporaries stay in the allocator's reuse range.
    edges = np.zeros(n)
    if h > 1:
        d = np.abs(planes[:, w:] - planes[:, :-w])
        edges += d.reshape(n, -1).sum(axis=1, dtype=np.float64) / (c * (h - 1) * w)
    if w > 1:
        rows = planes.reshape(n * c * h, w)
        d = np.abs(rows[:, 1:] - rows[:, :-1])
        edges += d.reshape(n, -1).sum(axis=1, dtype=np.float64) / (c * h * (w - 1))
    return np.stack(
        [mean / 255.0, np.sqrt(var) / 255.0, dark / m, bright / m, edges / 510.0], axis=1
    )


def features_dict(row: np.ndarray) -> dict[str, float]:
    """One image's summaries as the prediction log records them (rounded to 6 digits)."""
    return {name: round(float(v), 6) for name, v in zip(FEATURES, row, strict=True)}


def columns(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The summaries of uint8 pixels [N, C, H, W] as one column per feature."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 4:
        raise InputError(
            f"training pixels must be uint8 [N, C, H, W], got {pixels.dtype} {list(pixels.shape)}."
        )
    feats = image_features(pixels)
    return {name: feats[:, i] for i, name in enumerate(FEATURES)}


# ------------------------------------------------------------------------------ the protocol


def features(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [{"name": name, "type": "numeric", "nullable": False} for name in FEATURES]


def load_pixels(prepared: Path, split: str) -> np.ndarray:
    path = Path(prepared) / f"{split}.npz"
    if not path.is_file():
        raise InputError(f"{path}: not found; run `dvc repro prepare` first.")
    with np.load(path) as npz:
        return npz["x"]


def reference(prepared: Path, spec: dict[str, Any] | None) -> dict[str, np.ndarray]:
    return columns(load_pixels(prepared, "train"))


def pixel_feeds(
    card: dict[str, Any], pixels: np.ndarray, batch_size: int = BATCH_SIZE
) -> Iterator[dict[str, np.ndarray]]:
    """The exported graph's feed for uint8 pixels, normalized as in training, batch by batch."""
    from ...core.preprocess import normalize

    spec = card["input"]
    name = spec.get("name", "input")  # the graph's one input (the card's input.name)
    for start in range(0, len(pixels), batch_size):
        x = normalize(pixels[start : start + batch_size], spec["mean"], spec["std"])
        yield {name: x.astype(np.float32)}


def feeds(
    prepared: Path, split: str, card: dict[str, Any], batch_size: int = BATCH_SIZE
) -> Iterator[dict[str, np.ndarray]]:
    return pixel_feeds(card, load_pixels(prepared, split), batch_size)


def record_values(features: dict[str, Any], spec: dict[str, Any] | None) -> list[float]:
    return [float(features[name]) for name in FEATURES]


def image_files(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of images.")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
    )


def read_pixels(folder: str | Path, spec: dict[str, Any]) -> np.ndarray:
    """Every image under `folder` (class sub-folders or not), preprocessed as the server does."""
    from ...core.preprocess import ImageError, open_image, to_pixels

    folder = Path(folder)
    files = image_files(folder)
    if not files:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}).")
    try:
        return np.stack(
            [
                to_pixels(
                    open_image(p), spec["height"], spec["width"], spec["channels"], spec["resize"]
                )
                for p in files
            ]
        )
    except ImageError as exc:
        raise InputError(str(exc)) from exc


def read_inputs(
    path: str | Path, card: dict[str, Any]
) -> tuple[dict[str, np.ndarray], Iterator[dict[str, np.ndarray]]]:
    pixels = read_pixels(path, card["input"])
    return columns(pixels), pixel_feeds(card, pixels)


def predict_classes(
    session, card: dict[str, Any], pixels: np.ndarray, batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """Class indices the ONNX model predicts for uint8 pixels [N, C, H, W]."""
    name = session.get_inputs()[0].name
    out = [
        session.run(None, {name: next(iter(feed.values()))})[0].argmax(axis=1)
        for feed in pixel_feeds(card, pixels, batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
