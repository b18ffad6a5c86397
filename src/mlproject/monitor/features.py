"""Per-image input summaries: the features that prediction logs record and drift compares.

One function, used by the server when it logs a request and by the pipeline when it builds the
reference profile, so both sides summarize an image the same way. Images of any size work.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("brightness", "contrast", "dark_fraction", "bright_fraction", "edge_energy")
# On the 0..1 scale a pixel is dark below 0.1 and bright above 0.9: for uint8 values v,
# v / 255 < 0.1 exactly when v <= 25, and v / 255 > 0.9 exactly when v >= 230.
DARK, BRIGHT = 0.1, 0.9
DARK_U8, BRIGHT_U8 = 25, 230


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
    return {name: round(float(v), 6) for name, v in zip(FEATURES, row, strict=True)}
