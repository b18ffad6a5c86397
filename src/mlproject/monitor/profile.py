"""Stage `profile`: the reference that drift detection compares production data with.

From the training split it records, per input feature (mlproject.monitor.features, the same
summaries the server logs): moments and quantiles, quantile bin edges with the training share of
each bin (for PSI), and a sample of raw values (for the Kolmogorov-Smirnov test). From the test
split it records the distribution of the classes the exported ONNX model predicts. The profile is
written next to the model (models/reference_profile.json) and versioned with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.cli import entry_point
from ..core.errors import ProjectError
from ..core.io import read_json, write_json
from ..core.paths import MODEL_CARD, ONNX_MODEL, PREPARED, REFERENCE_PROFILE
from ..core.preprocess import normalize
from .features import FEATURES, image_features
from .settings import MonitorSettings, ProfileSettings, load_settings

ONNX_PATH = ONNX_MODEL
CARD_PATH = MODEL_CARD
PROFILE_PATH = REFERENCE_PROFILE
SCHEMA_VERSION = 1
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class ProfileError(ProjectError, ValueError):
    """An input of the profile is missing or does not fit; the message names it."""


def bin_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Inner quantile edges (duplicates removed, so discrete features get fewer bins)."""
    inner = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(inner)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values in each bin (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    counts = np.bincount(np.digitize(values, edges), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def feature_summary(
    values: np.ndarray, settings: ProfileSettings, rng: np.random.Generator
) -> dict[str, Any]:
    edges = bin_edges(values, settings.bins)
    sample = (
        values
        if len(values) <= settings.sample_size
        else rng.choice(values, settings.sample_size, replace=False)
    )
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {f"p{round(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES},
        "bin_edges": [float(e) for e in edges],
        "bin_shares": [float(s) for s in bin_shares(values, edges)],
        # Rounded as the prediction log rounds (features_dict), so both sides compare alike.
        "sample": [round(float(v), 6) for v in np.sort(sample)],
    }


def onnx_session(onnx_path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def predict_classes(
    session, card: dict[str, Any], pixels: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Class indices the ONNX model predicts for uint8 pixels [N, C, H, W]."""
    spec = card["input"]
    name = session.get_inputs()[0].name
    out = []
    for start in range(0, len(pixels), batch_size):
        x = normalize(pixels[start : start + batch_size], spec["mean"], spec["std"])
        out.append(session.run(None, {name: x.astype(np.float32)})[0].argmax(axis=1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def load_pixels(prepared: Path, split: str) -> np.ndarray:
    path = prepared / f"{split}.npz"
    if not path.is_file():
        raise ProfileError(f"{path}: not found; run `dvc repro prepare` first.")
    with np.load(path) as npz:
        return npz["x"]


def build_profile(
    train_pixels: np.ndarray,
    test_pixels: np.ndarray,
    card: dict[str, Any],
    session,
    settings: MonitorSettings,
) -> dict[str, Any]:
    if train_pixels.dtype != np.uint8 or train_pixels.ndim != 4:
        raise ProfileError(
            f"training pixels must be uint8 [N, C, H, W], got "
            f"{train_pixels.dtype} {list(train_pixels.shape)}."
        )
    rng = np.random.default_rng(settings.profile.seed)
    feats = image_features(train_pixels)
    predicted = predict_classes(session, card, test_pixels)
    classes = list(card["classes"])
    counts = np.bincount(predicted, minlength=len(classes))
    return {
        "schema": SCHEMA_VERSION,
        "model": {"name": card.get("name"), "file": card.get("file"), "sha256": card.get("sha256")},
        "data": (card.get("lineage") or {}).get("data"),
        "settings": {
            "bins": settings.profile.bins,
            "sample_size": settings.profile.sample_size,
            "seed": settings.profile.seed,
        },
        "features": {
            name: feature_summary(feats[:, i], settings.profile, rng)
            for i, name in enumerate(FEATURES)
        },
        "predicted": {
            "split": "test",
            "n": int(counts.sum()),
            "classes": classes,
            "counts": [int(c) for c in counts],
            "shares": [float(c) for c in counts / max(int(counts.sum()), 1)],
        },
    }


def profile(
    settings: MonitorSettings,
    prepared: Path = PREPARED,
    onnx_path: Path = ONNX_PATH,
    card_path: Path = CARD_PATH,
    out: Path = PROFILE_PATH,
) -> dict[str, Any]:
    for path in (onnx_path, card_path):
        if not path.is_file():
            raise ProfileError(f"{path}: not found; run `dvc repro export` first.")
    card = read_json(card_path)
    result = build_profile(
        load_pixels(prepared, "train"),
        load_pixels(prepared, "test"),
        card,
        onnx_session(onnx_path),
        settings,
    )
    write_json(out, result)
    return result


def load_profile(path: str | Path = PROFILE_PATH) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"{path}: reference profile not found; run `dvc repro profile`.")
    data = read_json(path)
    missing = [k for k in ("features", "predicted") if k not in data]
    if missing or data.get("schema") != SCHEMA_VERSION:
        raise ProfileError(
            f"{path}: not a reference profile of schema {SCHEMA_VERSION} "
            f"(missing {missing or 'schema'}); rebuild it with `dvc repro profile`."
        )
    return data


@entry_point(stage="profile")
def main() -> int:
    from ..core.io import atomic_write_text
    from .alert_rules import REFERENCE_RULES, reference_rules

    result = profile(load_settings())
    atomic_write_text(REFERENCE_RULES, reference_rules(result))
    n_train = result["features"][FEATURES[0]]["n"]
    print(
        f"profile: {PROFILE_PATH} ({len(FEATURES)} features from {n_train} training images, "
        f"predicted classes of {result['predicted']['n']} test images); alert reference "
        f"{REFERENCE_RULES}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
