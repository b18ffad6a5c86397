"""Per-image input summaries: the features that prediction logs record and drift compares.

One function, used by the server when it logs a request and by the pipeline when it builds the
reference profile, so both sides summarize an image the same way. Images of any size work.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("brightness", "contrast", "dark_fraction", "bright_fraction", "edge_energy")


def image_features(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels [N, C, H, W] -> float64 [N, len(FEATURES)] summaries on the 0..1 scale.

    brightness: mean intensity; contrast: its standard deviation; dark/bright_fraction: share of
    pixels below 0.1 / above 0.9; edge_energy: mean absolute difference between neighbours.
    """
    x = np.asarray(pixels, dtype=np.float64) / 255.0
    if x.ndim == 3:
        x = x[None]
    flat = x.reshape(len(x), -1)
    gy = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3)) if x.shape[2] > 1 else 0.0
    gx = np.abs(np.diff(x, axis=3)).mean(axis=(1, 2, 3)) if x.shape[3] > 1 else 0.0
    return np.stack(
        [
            flat.mean(axis=1),
            flat.std(axis=1),
            (flat < 0.1).mean(axis=1),
            (flat > 0.9).mean(axis=1),
            (np.asarray(gx) + np.asarray(gy)) / 2 * np.ones(len(x)),
        ],
        axis=1,
    )


def features_dict(row: np.ndarray) -> dict[str, float]:
    return {name: round(float(v), 6) for name, v in zip(FEATURES, row, strict=True)}
