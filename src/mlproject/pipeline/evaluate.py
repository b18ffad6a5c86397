"""Stage `evaluate`: metrics and plots of the trained model on the held-out test split.

Writes reports/eval/metrics.json (accuracy, f1_macro, ...), reports/eval/classes.json and
classes.csv (precision, recall, F1 and support per class; the CSV feeds a bar plot) and
reports/eval/predictions.csv (actual and predicted class per test item, the source of the
confusion-matrix plot in dvc.yaml).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import kinds
from ..core.cli import entry_point
from ..core.io import atomic_dir, write_json
from ..core.paths import EVAL_REPORTS
from .config import load_params
from .train import CHECKPOINT, PREPARED, load_checkpoint, predict_logits

OUT_DIR = EVAL_REPORTS


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """[actual, predicted] counts over k classes."""
    return np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]
) -> tuple[dict[str, float], dict[str, Any]]:
    """Accuracy and per-class precision, recall, F1 as scikit-learn computes them (a class never
    predicted or absent scores 0: zero_division=0), from the confusion matrix. numpy only: the
    stage does not pay for importing scikit-learn and SciPy (~1-2 s)."""
    cm = confusion_matrix(y_true, y_pred, len(classes)).astype(np.float64)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _divide(tp, predicted), _divide(tp, support)
    f1 = _divide(2 * tp, support + predicted)
    summary = {
        "accuracy": float(tp.sum() / cm.sum()),
        "f1_macro": float(f1.mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
    }
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return summary, per_class


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
    y_pred = logits.argmax(1).numpy()
    summary, per_class = classification_metrics(y, y_pred, classes)
    summary["loss"] = float(F.cross_entropy(logits, torch.from_numpy(y)).item())
    summary["n_test"] = len(y)

    per_class_csv = io.StringIO()
    csv.writer(per_class_csv, lineterminator="\n").writerows(
        [["class", "precision", "recall", "f1", "support"]]
        + [
            [name, round(m["precision"], 6), round(m["recall"], 6), round(m["f1"], 6), m["support"]]
            for name, m in per_class.items()
        ]
    )
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    writer.writerows((classes[a], classes[p]) for a, p in zip(y, y_pred, strict=True))
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "metrics.json", summary)
        write_json(tmp / "classes.json", per_class)
        write_json(
            tmp / "confusion_matrix.json",
            {
                "labels": classes,
                "matrix": confusion_matrix(y, y_pred, len(classes)).tolist(),
            },
        )
        (tmp / "predictions.csv").write_text(rows.getvalue())
        (tmp / "classes.csv").write_text(per_class_csv.getvalue())
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
