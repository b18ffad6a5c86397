"""The window of production data that drift compares with the reference profile: the newest
records of the prediction logs (predictions.jsonl and its rotations), or a folder or file of
inputs (images, a CSV) that the ONNX model predicts. The model's data kind reads the features
of a record or of the inputs (`mlproject.kinds.<kind>.monitoring`); its task reads the record's
`predicted` (`mlproject.tasks.<task>.logged_prediction`: a class name, or a number). Records
carry the request's `"id"` (mlproject.serve.predlog), which live quality joins with later
ground truth (mlproject.monitor.quality)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import tasks
from ..core.errors import ProjectError
from .profile import monitoring, predict

LOG_NAME = "predictions.jsonl"


class DriftInputError(ProjectError, ValueError):
    """The window of production data cannot be read or is too small; the message says which."""


@dataclass
class Window:
    """What is compared with the profile: input features and predictions (class names, or a
    regression model's numbers).

    `features` is {name: values} (numeric: float64, NaN = missing; categorical: strings,
    "" = missing), or a 2-D array with one column per profile feature, in the profile's order.
    `logged` is {record id: prediction} over every record read from the logs, the window's and
    older ones (ground truth arrives late), less ids logged more than once (counted in
    `info["repeated_ids"]`); empty for inputs, which have no ids.
    """

    source: str
    features: Any
    predicted: list[Any]
    info: dict[str, Any] = field(default_factory=dict)
    logged: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.predicted)

    def column(self, index: int, name: str) -> np.ndarray:
        if isinstance(self.features, np.ndarray):
            return self.features[:, index]
        return np.asarray(self.features[name])


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


def parse_record(
    line: str, where: str, kind, spec, task=None
) -> tuple[float, list[Any], Any, str, str | None]:
    """(ts, feature values, prediction, model sha256, id or None) of one logged line."""
    task = task or tasks.get(None)
    try:
        rec = json.loads(line)
        ts, features = float(rec["ts"]), rec["features"]
        predicted = task.logged_prediction(rec["predicted"])
    except json.JSONDecodeError as exc:
        raise DriftInputError(f"{where}: not valid JSON ({exc.msg}).") from exc
    except KeyError as exc:
        raise DriftInputError(f"{where}: record has no field {exc.args[0]!r}.") from exc
    except (TypeError, ValueError) as exc:
        raise DriftInputError(f"{where}: bad value in record ({exc}).") from exc
    try:
        values = kind.record_values(features, spec)
    except KeyError as exc:
        raise DriftInputError(
            f"{where}: record's features have no {exc.args[0]!r} (the profile's features: "
            f"{', '.join(f['name'] for f in kind.features(spec))})."
        ) from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise DriftInputError(f"{where}: bad value in record's features ({exc}).") from exc
    record_id = rec.get("id")
    return (
        ts,
        values,
        predicted,
        str(rec.get("model_sha256", "")),
        (None if record_id is None else str(record_id)),
    )


def read_logs(
    folder: str | Path,
    window: int,
    spec: dict[str, Any] | None = None,
    task: str | None = None,
) -> Window:
    """The newest `window` records of the prediction logs in `folder`; `spec` (the profile's
    `input`) says which kind reads their features (None: images), `task` (the profile's) how
    to read their predictions (None: class names)."""
    folder = Path(folder)
    kind = monitoring(spec)
    reader = tasks.get(task)
    names = [f["name"] for f in kind.features(spec)]
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
                records.append(parse_record(line, f"{path}:{number}", kind, spec, reader))
    if not records:
        raise DriftInputError(f"{folder}: the prediction logs hold no complete records.")
    ids = Counter(r[4] for r in records if r[4] is not None)
    repeated = {i for i, n in ids.items() if n > 1}
    logged = {r[4]: r[2] for r in records if r[4] is not None and r[4] not in repeated}
    records.sort(key=lambda r: r[0])
    records = records[-window:]
    columns = list(zip(*(r[1] for r in records), strict=True))
    return Window(
        source=f"logs {folder}",
        features={
            name: np.array(col, dtype=np.float64 if f["type"] == "numeric" else object)
            for name, f, col in zip(names, kind.features(spec), columns, strict=True)
        },
        predicted=[r[2] for r in records],
        info={
            "records": len(records),
            "first_ts": records[0][0],
            "last_ts": records[-1][0],
            "skipped_partial_lines": partial,
            "models": dict(Counter(r[3] for r in records).most_common()),
            "repeated_ids": len(repeated),
        },
        logged=logged,
    )


def read_inputs(path: str | Path, card: dict[str, Any], session) -> Window:
    """A folder or file of inputs (images, rows), read and predicted as the server would."""
    kind = monitoring(card.get("input"))
    try:
        values, feeds = kind.read_inputs(path, card)
        outputs = predict(session, feeds)
    except (ProjectError, OSError) as exc:
        if isinstance(exc, DriftInputError):
            raise
        raise DriftInputError(str(exc)) from exc
    predicted = tasks.for_card(card).prediction_labels(outputs, card)  # classes, or numbers
    return Window(
        source=f"{kind.UNIT} {path}",
        features=values,
        predicted=predicted,
        info={"records": len(predicted), "models": {card.get("sha256", ""): len(predicted)}},
    )
