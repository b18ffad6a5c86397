"""Live quality: logged predictions scored against ground truth that arrives later.

`make monitor LOGS=<dir> ACTUALS=<file>` (`--actuals`): a CSV with a header and the columns `id`
and `actual` (others are ignored), one row per predicted item whose true value is now known.
Ids are the ones the server logs (mlproject.serve.predlog: the request's id, suffixed `#<i>` for
the i-th item of a multi-item request). Every record of the logs can match, not only the
window's: ground truth comes late. The task reads `actual` (`tasks.<task>.parse_actual`: a
number, or a class name) and scores the matched pairs (`tasks.<task>.live_metrics`: rmse and
mae, or accuracy and macro F1); the test split's values of the same metrics
(reports/eval/metrics.json) stand beside them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .. import tasks
from ..core.io import read_json
from .window import DriftInputError, Window

COLUMNS = ("id", "actual")
LISTED_UNKNOWN = 5  # unknown ids named in the report (all are counted)


class ActualsError(DriftInputError):
    """The file of actuals cannot be read or matched; the message names the file, row, column."""


def read_actuals(path: str | Path, task: str | None) -> dict[str, Any]:
    """{id: actual} of a CSV `id,actual`; a missing column, an empty id, a repeated id or an
    `actual` the task cannot read is an error naming the file and row (the header is row 1)."""
    path = Path(path)
    reader = tasks.get(task)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ActualsError(f"{path}: cannot read the actuals ({exc}).") from exc
    if not rows:
        raise ActualsError(f"{path}: empty; expected a header `id,actual` and a row per item.")
    header = [name.strip() for name in rows[0]]
    for name in COLUMNS:
        if name not in header:
            raise ActualsError(
                f"{path}: no column {name!r} (columns: {', '.join(header) or 'none'}); "
                "expected a header `id,actual`."
            )
    at = {name: header.index(name) for name in COLUMNS}
    actuals: dict[str, Any] = {}
    first_row: dict[str, int] = {}
    for row_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        cells = {name: row[i].strip() if i < len(row) else None for name, i in at.items()}
        if not cells["id"]:
            raise ActualsError(f"{path}: row {row_number}: 'id' is empty.")
        if cells["actual"] is None:
            raise ActualsError(f"{path}: row {row_number}: no value for 'actual'.")
        if cells["id"] in actuals:
            raise ActualsError(
                f"{path}: row {row_number}: id {cells['id']!r} repeats row "
                f"{first_row[cells['id']]}; give each item one actual."
            )
        try:
            actuals[cells["id"]] = reader.parse_actual(cells["actual"])
        except ValueError as exc:
            raise ActualsError(f"{path}: row {row_number}: 'actual' {exc}.") from exc
        first_row[cells["id"]] = row_number
    if not actuals:
        raise ActualsError(f"{path}: no rows after the header.")
    return actuals


def split_metrics(path: Path, names: tuple[str, ...]) -> dict[str, float] | None:
    """The test split's values of `names` (reports/eval/metrics.json), None when absent."""
    if not path.is_file():
        return None
    metrics = read_json(path)
    found = {name: metrics[name] for name in names if isinstance(metrics.get(name), (int, float))}
    return found or None


def live_quality(
    actuals_path: str | Path,
    window: Window,
    task: str | None,
    classes: list[str] | None,
    metrics_path: Path,
) -> dict[str, Any]:
    """Live metrics of the logged predictions whose actual is known, with the counts of the
    join and the test split's metrics beside them (drift.json's `quality`)."""
    module = tasks.get(task)
    actuals = read_actuals(actuals_path, task)
    if not window.logged:
        raise ActualsError(
            f"{window.source}: no logged record carries an 'id' (or every id repeats), so "
            f"{actuals_path} cannot be joined; a server that logs ids writes them "
            "(mlproject.serve.predlog)."
        )
    matched = [key for key in actuals if key in window.logged]
    unknown = [key for key in actuals if key not in window.logged]
    if not matched:
        raise ActualsError(
            f"{actuals_path}: none of its {len(actuals)} ids is in the prediction logs "
            f"({window.source}; e.g. {unknown[0]!r}); are they the server's request ids?"
        )
    # NaN: a prediction the model could not make (logged as null); scored apart, counted.
    scored = [key for key in matched if window.logged[key] == window.logged[key]]
    if not scored:
        raise ActualsError(
            f"{actuals_path}: the {len(matched)} logged records it matches hold no prediction "
            "(null: not finite); nothing to score."
        )
    live = module.live_metrics(
        [actuals[key] for key in scored], [window.logged[key] for key in scored], classes
    )
    return {
        "actuals": str(actuals_path),
        "n_actuals": len(actuals),
        "matched": len(matched),
        "without_prediction": len(matched) - len(scored),
        "unknown": len(unknown),
        "unknown_ids": unknown[:LISTED_UNKNOWN],
        "logged_ids": len(window.logged),
        "repeated_ids": window.info.get("repeated_ids", 0),
        "metrics": live,
        "test": split_metrics(Path(metrics_path), tuple(live)),
        "test_source": str(metrics_path),
    }
