"""Is the change real? Base and head predict the same test items; compare them item by item.

The test depends on the task (read from the head's model card; see mlproject.tasks):
classification counts fixed/broken items (exact McNemar for accuracy, bootstrap for f1_macro),
regression counts improved/worsened items (Wilcoxon signed-rank on the paired errors, paired
bootstrap for rmse and mae). Both give, per metric, `delta`, `p_value`, `ci95`, `significant`
and `test`, and one plain verdict: "significant" or "within noise".

numpy only: the report job has no scipy.
"""

from __future__ import annotations

from typing import Any

from .. import tasks
from ..tasks.classification import SIGNIFICANCE_METRICS as METRICS
from ..tasks.classification import compare, mcnemar_exact, read_predictions
from ..tasks.stats import ALPHA, RESAMPLES, SEED, NotComparable

__all__ = [
    "ALPHA",
    "METRICS",
    "RESAMPLES",
    "SEED",
    "NotComparable",
    "compare",
    "from_texts",
    "mcnemar_exact",
    "read_predictions",
]


def from_texts(
    base_csv: str | None,
    head_csv: str | None,
    task: str | None = None,
    base_task: str | None = None,
) -> dict[str, Any]:
    """Significance from the two predictions CSVs of a `task` model (None: classification);
    {"error": why} when it cannot be computed. `base_task`: the base model's task, when known
    (a change of task leaves nothing to compare item by item)."""
    if base_csv is None or head_csv is None:
        side = "base" if base_csv is None else "head"
        return {"error": f"no reports/eval/predictions.csv at the {side}"}
    head_task = tasks.name_of({"task": task})
    if base_task is not None and tasks.name_of({"task": base_task}) != head_task:
        return {
            "error": f"base is a {tasks.name_of({'task': base_task})} model and head a "
            f"{head_task} model: their predictions are not comparable."
        }
    module = tasks.get(head_task)
    try:
        actual, base_pred = module.read_predictions(base_csv, "base predictions.csv")
        head_actual, head_pred = module.read_predictions(head_csv, "head predictions.csv")
        if len(head_actual) == len(actual) and head_actual != actual:
            raise NotComparable("base and head test sets differ (data or split changed).")
        return module.compare(actual, base_pred, head_pred)
    except NotComparable as exc:
        return {"error": str(exc)}
