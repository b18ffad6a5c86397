"""The task: the second axis of variation beside the data kind (classification, regression).

The task decides what the model predicts and therefore its metrics and their direction, the
files the evaluate stage writes, the significance test of the PR report and which gate metrics
apply. Everything outside this package asks `get(name)`, `for_config(cfg.data)` or
`for_card(card)` for a task module and calls its functions; nothing outside branches on the task.
A new task is a module here and one line in TASKS.

Every task module is torch-free (the report job and the server import it) and provides:

    NAME                     its name, as in `data.task` and the model card's `task`
    METRICS                  the test-split metrics only this task writes (metrics.json keys)
    SIGNIFICANCE_METRICS     the metrics its significance test covers (report.json keys)
    PLOT_FILES               the plot data files it writes under reports/eval/
    metrics(actual, predicted, classes=None) -> {metric: value}
    evaluation_files(actual, predicted, classes=None) -> {name under reports/eval/: text}
    read_predictions(text, source) -> (actual, predicted)   of a predictions.csv
    compare(actual, base_pred, head_pred, resamples, seed) -> significance dict
    significance_lead(sig) -> str                           the report's first sentence about it

and, for the monitor (mlproject.monitor):

    prediction_profile(outputs, card, bins) -> dict   the test split's predictions, summarized
    prediction_labels(outputs, card) -> list          what the server logs as `predicted`
    reference_rules(predicted) -> [recording rule]    the alerts' reference (deploy/prometheus)
    logged_prediction(value) -> class name | number   a log record's `predicted`, read
    parse_actual(text) -> class name | number         a cell of `make monitor ACTUALS=`
    LIVE_METRICS, live_metrics(actual, predicted, classes) -> {metric: value}   live quality

The training side (loss, head, export) is added to the same modules, importing torch lazily.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any

from ..core.errors import ProjectError

TASKS = {
    "classification": "mlproject.tasks.classification",
    "regression": "mlproject.tasks.regression",
}
DEFAULT = "classification"  # a data config, meta.json or model card without `task`


class TaskError(ProjectError, ValueError):
    """An unknown task; the message lists the known ones."""


def get(name: str | None) -> ModuleType:
    """The task module called `name` (None: classification)."""
    name = name or DEFAULT
    if name not in TASKS:
        raise TaskError(
            f"data.task: unknown task {name!r}; expected one of {sorted(TASKS)}. "
            "A new task is a module in src/mlproject/tasks/ and an entry in TASKS."
        )
    return import_module(TASKS[name])


def for_config(data_cfg: Any) -> ModuleType:
    """The task a `data:` config section selects (`data.task`, default classification)."""
    return get(data_cfg.get("task") if data_cfg is not None else None)


def name_of(doc: dict[str, Any] | None) -> str:
    """The task named by a model card or a prepared meta.json (absent: classification)."""
    name = (doc or {}).get("task") if isinstance(doc, dict) else None
    return name or DEFAULT


def for_card(card: dict[str, Any] | None) -> ModuleType:
    """The task of a model card or a prepared meta.json (top-level `task`)."""
    return get(name_of(card))


def owner(metric: str) -> str | None:
    """The task whose own metric this is (`accuracy` -> classification, `rmse` -> regression);
    None for metrics every task writes (`loss`, `n_test`) and anything else."""
    for name in TASKS:
        if metric in get(name).METRICS:
            return name
    return None
