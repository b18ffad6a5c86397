"""Stage `evaluate`: metrics and plots of the trained model on the held-out test split.

Writes the folder reports/eval/: metrics.json (the task's metrics, e.g. accuracy and f1_macro,
plus the loss and n_test), predictions.csv (actual and predicted per test item, the PR report's
significance test reads it) and the task's other files (mlproject.tasks: per-class figures and
the confusion plot's data for a classifier).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import kinds, tasks
from ..core.cli import entry_point
from ..core.io import atomic_dir, write_json
from ..core.paths import EVAL_REPORTS
from .config import load_params
from .train import CHECKPOINT, PREPARED, load_checkpoint, predict_logits

OUT_DIR = EVAL_REPORTS


def evaluate(
    prepared: Path = PREPARED, checkpoint: Path = CHECKPOINT, out_dir: Path = OUT_DIR
) -> dict[str, Any]:
    model, payload = load_checkpoint(checkpoint)
    classes = payload["classes"]
    spec = payload["input"]
    kind = kinds.for_spec(spec)
    device = torch.device("cpu")
    # Streamed from disk when the split is larger than the default memory budget.
    test = kind.open_split(Path(prepared), "test", {}, device)
    y = test.labels
    logits = predict_logits(model, kind.input_module(spec), test, batch_size=512, device=device)
    task = tasks.get(payload.get("task") or spec.get("task"))  # classification, regression
    y_pred = task.predicted(logits)
    summary = task.metrics(y, y_pred, classes)
    objective = task.Objective(
        str(payload["config"]["train"].get("loss", "auto")), payload.get("target")
    )
    summary["loss"] = float(objective.loss(logits, torch.from_numpy(y)).item())
    summary["n_test"] = len(y)
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "metrics.json", summary)
        for name, text in task.evaluation_files(y, y_pred, classes).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
    return summary


@entry_point(stage="evaluate")
def main() -> int:
    load_params()  # fail early on a bad config, naming the key
    metrics = evaluate()
    print(
        "evaluate: "
        + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "n_test")
        + f"  (n={metrics['n_test']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
