"""Stage `profile`: the reference that drift detection compares production data with.

The model's data kind (`mlproject.kinds.for_spec(card["input"]).monitoring`) names the features
and gives their training values (images: per-image summaries; a table: its raw columns). Per
numeric feature the profile records moments and quantiles, quantile bin edges with the training
share of each bin (for PSI), a sample of values (for the Kolmogorov-Smirnov test) and, where
values may be missing, the missing rate; per categorical feature the training categories, their
frequencies and the missing rate. From the test split it records what the exported ONNX model
predicts, as its task (`mlproject.tasks`) summarizes it: a classifier's class shares, or a
regression model's predicted value summarized as a numeric feature is (`type: numeric`), which
drift then tests as one. The profile carries the model's input spec, so drift on logs
needs nothing else, and is written next to the model (models/reference_profile.json).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .. import kinds, tasks
from ..core.cli import entry_point
from ..core.errors import ProjectError
from ..core.io import read_json, write_json
from ..core.paths import MODEL_CARD, ONNX_MODEL, PREPARED, REFERENCE_PROFILE
from .settings import MonitorSettings, ProfileSettings, load_settings

ONNX_PATH = ONNX_MODEL
CARD_PATH = MODEL_CARD
PROFILE_PATH = REFERENCE_PROFILE
SCHEMA_VERSION = 1
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
NUMERIC, CATEGORICAL = "numeric", "categorical"


class ProfileError(ProjectError, ValueError):
    """An input of the profile is missing or does not fit; the message names it."""


def monitoring(spec: dict[str, Any] | None) -> ModuleType:
    """The monitoring side of the kind that `spec` (a card's or profile's `input`) names."""
    return kinds.for_spec(spec).monitoring


def bin_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Inner quantile edges (duplicates removed, so discrete features get fewer bins)."""
    inner = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(inner)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values in each bin (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    counts = np.bincount(np.digitize(values, edges), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def numeric_summary(
    values: np.ndarray, settings: ProfileSettings, rng: np.random.Generator
) -> dict[str, Any]:
    """Moments, quantiles, PSI bins and the KS sample of the values present (NaN = missing)."""
    present = values[~np.isnan(values)] if np.isnan(values).any() else values
    if not len(present):
        raise ProfileError("no values present in the training split")
    edges = bin_edges(present, settings.bins)
    sample = (
        present
        if len(present) <= settings.sample_size
        else rng.choice(present, settings.sample_size, replace=False)
    )
    return {
        "n": len(values),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": float(present.min()),
        "max": float(present.max()),
        "quantiles": {f"p{round(q * 100):02d}": float(np.quantile(present, q)) for q in QUANTILES},
        "bin_edges": [float(e) for e in edges],
        "bin_shares": [float(s) for s in bin_shares(present, edges)],
        # Rounded as the prediction log rounds (features_dict), so both sides compare alike.
        "sample": [round(float(v), 6) for v in np.sort(sample)],
    }


def categorical_summary(values: np.ndarray, known: Iterable[str] = ()) -> dict[str, Any]:
    """Frequencies of the training categories ("" = missing, counted apart); categories the
    model knows but the split lacks count 0, so that they are not "new" in production."""
    present = values[values != ""]
    names, counts = np.unique(present.astype(str), return_counts=True)
    freq = dict(zip(names.tolist(), counts.tolist(), strict=True))
    categories = sorted(set(freq) | set(known) - {""})
    total = max(len(present), 1)
    return {
        "type": CATEGORICAL,
        "n": len(values),
        "missing_rate": (len(values) - len(present)) / len(values) if len(values) else 0.0,
        "categories": categories,
        "counts": [int(freq.get(c, 0)) for c in categories],
        "shares": [float(freq.get(c, 0) / total) for c in categories],
    }


def feature_summary(
    feature: dict[str, Any], values: np.ndarray, settings: ProfileSettings, rng
) -> dict[str, Any]:
    """The reference of one feature, by its type (numeric or categorical)."""
    try:
        if feature["type"] == CATEGORICAL:
            return categorical_summary(np.asarray(values), feature.get("categories", ()))
        values = np.asarray(values, dtype=np.float64)
        summary = numeric_summary(values, settings, rng)
    except ProfileError as exc:
        raise ProfileError(f"feature {feature['name']!r}: {exc}") from exc
    if feature.get("nullable"):  # kinds whose values may be missing (tables) say so
        missing = int(np.isnan(values).sum())
        summary = {"type": NUMERIC, **summary, "missing_rate": missing / max(len(values), 1)}
    return summary


def onnx_session(onnx_path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def predict(session, feeds: Iterable[dict[str, np.ndarray]]) -> np.ndarray:
    """The ONNX model's first output (logits, or a regression model's prediction), batch after
    batch; the task (mlproject.tasks) summarizes it."""
    out = [session.run(None, feed)[0] for feed in feeds]
    return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)


def build_profile(
    card: dict[str, Any],
    reference: dict[str, np.ndarray],
    predicted: np.ndarray,
    settings: MonitorSettings,
) -> dict[str, Any]:
    """The profile from the training values of each feature (the kind's `reference`) and the
    model's first output on the test split (`predicted`: logits, or predictions), which the
    task summarizes (a classifier: class shares; regression: the predicted value's
    distribution)."""
    spec = card.get("input")
    rng = np.random.default_rng(settings.profile.seed)
    described = {}
    for feature in monitoring(spec).features(spec):
        if feature["name"] not in reference:
            raise ProfileError(f"no training values for feature {feature['name']!r}")
        described[feature["name"]] = feature_summary(
            feature, reference[feature["name"]], settings.profile, rng
        )
    outputs = np.asarray(predicted)
    if outputs.ndim == 1:  # class indices, as before the tasks (tests hand them in)
        outputs = np.eye(len(card["classes"]), dtype=np.float32)[outputs.astype(np.int64)]
    return {
        "schema": SCHEMA_VERSION,
        "task": tasks.name_of(card),
        "model": {"name": card.get("name"), "file": card.get("file"), "sha256": card.get("sha256")},
        "data": (card.get("lineage") or {}).get("data"),
        "input": spec,
        "settings": {
            "bins": settings.profile.bins,
            "sample_size": settings.profile.sample_size,
            "seed": settings.profile.seed,
        },
        "features": described,
        "predicted": tasks.for_card(card).prediction_profile(
            outputs, card, bins=settings.profile.bins
        ),
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
    kind = monitoring(card.get("input"))
    predicted = predict(onnx_session(onnx_path), kind.feeds(prepared, "test", card))
    result = build_profile(card, kind.reference(prepared, card.get("input")), predicted, settings)
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
    unit = monitoring(result["input"]).UNIT
    n_train = next(iter(result["features"].values()))["n"]
    print(
        f"profile: {PROFILE_PATH} ({len(result['features'])} features from {n_train} training {unit}, "
        f"predictions on {result['predicted']['n']} test {unit}); alert reference "
        f"{REFERENCE_RULES}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
