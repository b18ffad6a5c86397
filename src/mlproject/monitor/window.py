"""The window of production data that drift compares with the reference profile: the newest
records of the prediction logs (predictions.jsonl and its rotations), or an image folder whose
classes the ONNX model predicts."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ProjectError
from .features import FEATURES, image_features
from .profile import predict_classes

LOG_NAME = "predictions.jsonl"
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


class DriftInputError(ProjectError, ValueError):
    """The window of production data cannot be read or is too small; the message says which."""


@dataclass
class Window:
    """What is compared with the profile: input features and predicted class names."""

    source: str
    features: np.ndarray  # float64 [N, len(FEATURES)]
    predicted: list[str]
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ reading data


def log_files(folder: Path) -> list[Path]:
    """predictions.jsonl and its rotations predictions.jsonl.1, .2, ... (any order)."""
    if not folder.is_dir():
        raise DriftInputError(f"{folder}: not a folder of prediction logs.")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (p.name == LOG_NAME or p.name.startswith(LOG_NAME + "."))
    )
    if not files:
        raise DriftInputError(f"{folder}: no {LOG_NAME} (or rotated {LOG_NAME}.N) files.")
    return files


def parse_record(line: str, where: str) -> tuple[float, list[float], str, str]:
    try:
        rec = json.loads(line)
        feats = rec["features"]
        return (
            float(rec["ts"]),
            [float(feats[name]) for name in FEATURES],
            str(rec["predicted"]),
            str(rec.get("model_sha256", "")),
        )
    except json.JSONDecodeError as exc:
        raise DriftInputError(f"{where}: not valid JSON ({exc.msg}).") from exc
    except KeyError as exc:
        raise DriftInputError(f"{where}: record has no field {exc.args[0]!r}.") from exc
    except (TypeError, ValueError) as exc:
        raise DriftInputError(f"{where}: bad value in record ({exc}).") from exc


def read_logs(folder: str | Path, window: int) -> Window:
    """The newest `window` records of the prediction logs in `folder`."""
    folder = Path(folder)
    records = []
    partial = 0
    for path in log_files(folder):
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        # A last line without its newline is a record being written (or torn by a crash): skip it.
        if lines and lines[-1].strip():
            partial += 1
        for number, line in enumerate(lines[:-1], start=1):
            if line.strip():
                records.append(parse_record(line, f"{path}:{number}"))
    if not records:
        raise DriftInputError(f"{folder}: the prediction logs hold no complete records.")
    records.sort(key=lambda r: r[0])
    records = records[-window:]
    return Window(
        source=f"logs {folder}",
        features=np.array([r[1] for r in records], dtype=np.float64),
        predicted=[r[2] for r in records],
        info={
            "records": len(records),
            "first_ts": records[0][0],
            "last_ts": records[-1][0],
            "skipped_partial_lines": partial,
            "models": dict(Counter(r[3] for r in records).most_common()),
        },
    )


def image_files(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[Path]:
    if not folder.is_dir():
        raise DriftInputError(f"{folder}: not a folder of images.")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
    )


def read_images(folder: str | Path, card: dict[str, Any], session) -> Window:
    """Every image under `folder` (class sub-folders or not), preprocessed as the server does."""
    from ..core.preprocess import ImageError, open_image, to_pixels

    folder = Path(folder)
    files = image_files(folder)
    if not files:
        raise DriftInputError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}).")
    spec = card["input"]
    try:
        pixels = np.stack(
            [
                to_pixels(
                    open_image(p), spec["height"], spec["width"], spec["channels"], spec["resize"]
                )
                for p in files
            ]
        )
    except ImageError as exc:
        raise DriftInputError(str(exc)) from exc
    classes = card["classes"]
    predicted = [classes[i] for i in predict_classes(session, card, pixels)]
    return Window(
        source=f"images {folder}",
        features=image_features(pixels),
        predicted=predicted,
        info={"records": len(files), "models": {card.get("sha256", ""): len(files)}},
    )
