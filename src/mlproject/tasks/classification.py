"""Classification: predict one of a fixed set of classes.

Report side (torch-free): the test-split metrics as scikit-learn computes them, the files the
evaluate stage writes, and the significance of base vs head on the same test items:

- fixed / broken: test items head gets right and base got wrong, and the reverse;
- accuracy: the exact two-sided McNemar p-value (a binomial test on the discordant pairs);
- accuracy and f1_macro: a seeded bootstrap 95% interval of the delta (head - base), resampling
  test items (the same resample for both models); f1_macro's p-value is the bootstrap's;
- a verdict: "significant" when some metric's p-value is below ALPHA, else "within noise".

The binomial tail is summed exactly with integers (no scipy in the report job).
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import numpy as np

from .stats import ALPHA, RESAMPLES, SEED, NotComparable, check_lengths, read_columns

NAME = "classification"
METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
SIGNIFICANCE_METRICS = ("accuracy", "f1_macro")
# Plot data under reports/eval/ (dvc.yaml `plots:`); the confusion matrix reads only this file,
# never predictions.csv, which a regression model writes too.
PLOT_FILES = ("plots/confusion.csv",)

__all__ = ["NotComparable", "compare", "mcnemar_exact", "metrics", "evaluation_files"]


# ----------------------------------------------------------------------------- test metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """[actual, predicted] counts over k classes."""
    return np.bincount(np.asarray(y_true) * k + np.asarray(y_pred), minlength=k * k).reshape(k, k)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def per_class_metrics(
    actual: np.ndarray, predicted: np.ndarray, classes: list[str]
) -> tuple[dict[str, float], dict[str, Any]]:
    """(summary, per class): accuracy and per-class precision, recall, F1 as scikit-learn
    computes them (a class never predicted or absent scores 0: zero_division=0), from the
    confusion matrix; numpy only, so the stage does not pay for importing scikit-learn."""
    cm = confusion_matrix(actual, predicted, len(classes)).astype(np.float64)
    tp, support, predicted_n = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _divide(tp, predicted_n), _divide(tp, support)
    f1 = _divide(2 * tp, support + predicted_n)
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


def metrics(actual, predicted, classes: list[str] | None = None) -> dict[str, float]:
    """accuracy, f1_macro, precision_macro, recall_macro of class indices (actual, predicted)
    over `classes` (the stage adds `loss` and `n_test`)."""
    actual, predicted = np.asarray(actual), np.asarray(predicted)
    classes = _classes(actual, predicted, classes)
    return per_class_metrics(actual, predicted, classes)[0]


# ------------------------------------------------------------------------------ monitoring


def prediction_profile(outputs: np.ndarray, card: dict[str, Any]) -> dict[str, Any]:
    """The reference of what the model predicts, from its first ONNX output on the test split
    (logits [N, classes]): each class's count and share (models/reference_profile.json)."""
    classes = list(card["classes"])
    counts = np.bincount(np.asarray(outputs).argmax(axis=1), minlength=len(classes))
    return {
        "split": "test",
        "n": int(counts.sum()),
        "classes": classes,
        "counts": [int(c) for c in counts],
        "shares": [float(c) for c in counts / max(int(counts.sum()), 1)],
    }


def prediction_labels(outputs: np.ndarray, card: dict[str, Any]) -> list[str]:
    """What the server logs as `predicted` for the first ONNX output (logits): class names."""
    classes = card["classes"]
    return [classes[i] for i in np.asarray(outputs).argmax(axis=1)]


def reference_rules(predicted: dict[str, Any]) -> list[dict[str, Any]]:
    """Prometheus recording rules holding each class's share of the test split's predictions:
    the class-share alert (deploy/prometheus/rules.yml) compares live traffic with them."""
    classes, shares = predicted.get("classes"), predicted.get("shares")
    if not classes or not shares or len(classes) != len(shares):
        raise ValueError("`predicted.classes` and `predicted.shares` are needed")
    return [
        {
            "record": "mlserve:reference_class_share",
            "expr": repr(round(float(share), 6)),
            "labels": {"class_name": str(name)},
        }
        for name, share in zip(classes, shares, strict=True)
    ]


# ------------------------------------------------------------------------------ training side
# (PyTorch, imported inside: the report job and the server import this module without it)

LOSSES = ("cross_entropy",)
# Permutation importance (a table's explain stage): (metric, score(actual, predicted), lower is
# better).
IMPORTANCE = ("accuracy", lambda actual, predicted: float(np.mean(predicted == actual)), False)
OUTPUT_NOTE = "softmax over logits gives class probabilities"  # the model card's output.postprocess
OUTPUT_NAMES = ("logits", "probabilities")  # the exported graph's outputs


def num_outputs(classes: list[str]) -> int:
    return len(classes)


def target_stats(labels) -> dict[str, float]:
    """What the head needs to know of the training targets: nothing for classes."""
    return {}


def head(model, stats: dict[str, float]):
    """The trained module: the network itself (it outputs logits)."""
    return model


def deploy(model):
    """The exported module: logits and their softmax, so clients need no post-processing."""
    from .torch_heads import WithProbabilities

    return WithProbabilities(model)


class Objective:
    """Per batch: the loss, and the epoch metric's running sum (correct predictions)."""

    metric = "accuracy"

    def __init__(self, loss_name: str = "auto", stats: dict[str, float] | None = None):
        if loss_name not in ("auto", *LOSSES):
            from ..pipeline.config import ConfigError

            raise ConfigError(
                f"train.loss is {loss_name!r}; a classifier trains with one of "
                f"{['auto', *LOSSES]}.",
                key="train.loss",
            )

    def loss(self, outputs, targets):
        import torch.nn.functional as F

        return F.cross_entropy(outputs, targets)

    def score(self, outputs, targets):
        return (outputs.argmax(1) == targets).sum()

    def zero(self, device):
        import torch

        return torch.zeros((), device=device, dtype=torch.long)

    def finish(self, score_sum, count):
        return score_sum / count


def predicted(outputs) -> np.ndarray:
    """Predicted class indices of logits [N, classes] (a tensor), as numpy int64."""
    return outputs.argmax(1).cpu().numpy()


def _classes(actual, predicted, classes):
    if classes is not None:
        return list(classes)
    top = int(max(actual.max(initial=-1), predicted.max(initial=-1)))
    return [str(i) for i in range(top + 1)]


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"  # as core.io.write_json


def _csv(rows) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def evaluation_files(actual, predicted, classes: list[str] | None = None) -> dict[str, str]:
    """The evaluate stage's files besides metrics.json, {name under reports/eval/: text}:
    classes.json and classes.csv (precision, recall, F1, support per class; the CSV feeds a bar
    plot), confusion_matrix.json, predictions.csv (actual and predicted class per test item, the
    significance test's input) and plots/confusion.csv (the same pairs, the confusion plot's)."""
    actual, predicted = np.asarray(actual), np.asarray(predicted)
    classes = _classes(actual, predicted, classes)
    _, per_class = per_class_metrics(actual, predicted, classes)
    pairs = _csv(
        [["actual", "predicted"]]
        + [[classes[a], classes[p]] for a, p in zip(actual, predicted, strict=True)]
    )
    return {
        "classes.json": _json(per_class),
        "confusion_matrix.json": _json(
            {
                "labels": classes,
                "matrix": confusion_matrix(actual, predicted, len(classes)).tolist(),
            }
        ),
        "predictions.csv": pairs,
        "classes.csv": _csv(
            [["class", "precision", "recall", "f1", "support"]]
            + [
                [
                    name,
                    round(m["precision"], 6),
                    round(m["recall"], 6),
                    round(m["f1"], 6),
                    m["support"],
                ]
                for name, m in per_class.items()
            ]
        ),
        "plots/confusion.csv": pairs,
    }


# ------------------------------------------------------------------------------ significance


def read_predictions(text: str, source: str) -> tuple[list[str], list[str]]:
    """(actual, predicted) class names of a predictions CSV."""
    return read_columns(text, source)


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: P(X <= min) * 2 for X ~ Binomial(fixed + broken, 1/2)."""
    n = fixed + broken
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(fixed, broken) + 1))
    return min(1.0, 2 * tail / 2**n)


def _accuracy(correct: np.ndarray) -> np.ndarray:
    return correct.mean(axis=-1)


def _f1_macro(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Macro F1 over k classes for each row of y/pred [B, n] (an absent class scores 0, as in
    sklearn's zero_division=0 with all labels given)."""
    b = y.shape[0]
    offset = (np.arange(b) * k)[:, None]

    def counts(labels: np.ndarray) -> np.ndarray:
        return np.bincount((labels + offset).ravel(), minlength=b * k).reshape(b, k)

    # True positives: count y where the prediction is right (others go to a spare bin).
    hits = np.where(y == pred, y + offset, b * k)
    tp = np.bincount(hits.ravel(), minlength=b * k + 1)[: b * k].reshape(b, k)
    denom = counts(y) + counts(pred)
    f1 = np.divide(2 * tp, denom, out=np.zeros(denom.shape), where=denom > 0)
    return f1.mean(axis=1)


def compare(
    actual: list[str],
    base_pred: list[str],
    head_pred: list[str],
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Any]:
    """Significance of head vs base on one test set: {metric: {fixed, broken, p_value, ci95,
    delta, significant, test}, ..., "verdict": ...}."""
    check_lengths(actual, base_pred, head_pred)
    classes = sorted(set(actual) | set(base_pred) | set(head_pred))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in actual])
    pb = np.array([index[c] for c in base_pred])
    ph = np.array([index[c] for c in head_pred])
    base_ok, head_ok = pb == y, ph == y
    fixed, broken = int(np.sum(head_ok & ~base_ok)), int(np.sum(base_ok & ~head_ok))

    rng = np.random.default_rng(seed)
    sample = rng.integers(0, len(y), size=(resamples, len(y)))
    k = len(classes)
    deltas = {
        "accuracy": _accuracy(head_ok[sample]) - _accuracy(base_ok[sample]),
        "f1_macro": _f1_macro(y[sample], ph[sample], k) - _f1_macro(y[sample], pb[sample], k),
    }
    point = {
        "accuracy": float(head_ok.mean() - base_ok.mean()),
        "f1_macro": float(_f1_macro(y[None], ph[None], k)[0] - _f1_macro(y[None], pb[None], k)[0]),
    }
    out: dict[str, Any] = {}
    for metric in SIGNIFICANCE_METRICS:
        d = deltas[metric]
        if metric == "accuracy":
            p_value, test = mcnemar_exact(fixed, broken), "exact McNemar (binomial)"
        else:
            p_value = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
            test = f"bootstrap ({resamples} resamples, seed {seed})"
            if fixed == broken == 0:
                p_value = 1.0
        low, high = np.percentile(d, [2.5, 97.5])
        out[metric] = {
            "fixed": fixed,
            "broken": broken,
            "delta": round(point[metric], 6),
            "p_value": round(p_value, 6),
            "ci95": [round(float(low), 6), round(float(high), 6)],
            "significant": p_value < ALPHA,
            "test": test,
        }
    out["n"] = len(y)
    out["alpha"] = ALPHA
    out["verdict"] = (
        "significant"
        if any(out[m]["significant"] for m in SIGNIFICANCE_METRICS)
        else "within noise"
    )
    return out


def significance_lead(sig: dict[str, Any]) -> str:
    """The report's sentence on the items that changed."""
    first = sig[next(m for m in SIGNIFICANCE_METRICS if m in sig)]
    return (
        f"Of {sig['n']} test items, head **fixes {first['fixed']}** and "
        f"**breaks {first['broken']}** that base got right."
    )
