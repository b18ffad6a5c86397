"""Regression: predict a number.

Report side (torch-free): the test-split metrics (rmse, mae, r2; lower is better for the first
two), the files the evaluate stage writes, and the significance of base vs head on the same
test items:

- improved / worsened: test items whose absolute error head makes smaller, and larger;
- mae: Wilcoxon signed-rank test on the paired absolute errors (head - base);
- rmse: the same test on the paired squared errors (the quantity rmse averages);
- both: a seeded paired-bootstrap 95% interval of the delta (head - base), resampling test items
  (the same resample for both models);
- a verdict: "significant" when some metric's p-value is below ALPHA, else "within noise".
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

from .stats import (
    ALPHA,
    RESAMPLES,
    SEED,
    NotComparable,
    bootstrap_samples,
    check_lengths,
    read_columns,
    wilcoxon,
)

NAME = "regression"
METRICS = ("rmse", "mae", "r2")
SIGNIFICANCE_METRICS = ("rmse", "mae")
# Plot data under reports/eval/ (dvc.yaml `plots:` "Predicted vs actual" and "Residuals"): a
# file only regression writes, so a classification project draws neither.
PLOT_FILES = ("plots/residuals.csv",)


# ------------------------------------------------------------------------------ monitoring

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def prediction_profile(outputs: np.ndarray, card: dict[str, Any]) -> dict[str, Any]:
    """The reference of what the model predicts, from its ONNX output on the test split
    (predictions [N, 1]): the distribution of the predicted value."""
    values = np.asarray(outputs, dtype=np.float64).reshape(-1)
    if not len(values):
        raise ValueError("no predictions on the test split")
    return {
        "split": "test",
        "n": int(len(values)),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {f"p{round(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES},
        "sample": [round(float(v), 6) for v in np.sort(values)],
    }


def prediction_labels(outputs: np.ndarray, card: dict[str, Any]) -> list[float]:
    """The predicted values of the ONNX output (predictions [N, 1])."""
    return [float(v) for v in np.asarray(outputs, dtype=np.float64).reshape(-1)]


def reference_rules(predicted: dict[str, Any]) -> list[dict[str, Any]]:
    """Prometheus recording rules holding the test split's predicted-value quantiles and mean,
    to compare live predictions with."""
    quantiles = predicted.get("quantiles")
    if not quantiles or "mean" not in predicted:
        raise ValueError("`predicted.quantiles` and `predicted.mean` are needed")
    rules = [
        {
            "record": "mlserve:reference_prediction_quantile",
            "expr": repr(round(float(v), 6)),
            "labels": {"quantile": str(int(k[1:]) / 100)},
        }
        for k, v in quantiles.items()
    ]
    rules.append(
        {"record": "mlserve:reference_prediction_mean", "expr": repr(round(predicted["mean"], 6))}
    )
    return rules


# ---------------------------------------------------------------------------- training side
# (PyTorch, imported inside: the report job and the server import this module without it)

LOSSES = ("mse", "mae", "huber")  # train.loss; auto = mse
# Permutation importance (a table's explain stage): (metric, score(actual, predicted), lower is
# better): how much a shuffled column raises the rmse.
IMPORTANCE = (
    "rmse",
    lambda actual, predicted: float(np.sqrt(np.mean((np.asarray(predicted) - actual) ** 2))),
    True,
)
OUTPUT_NOTE = "the prediction, in the target's units"  # the model card's output.postprocess
OUTPUT_NAMES = ("prediction",)  # the exported graph's output: [N, 1] in the target's units


def num_outputs(classes: list[str]) -> int:
    return 1


def target_stats(labels) -> dict[str, float]:
    """The training targets' mean and std: the network learns the standardized target."""
    y = np.asarray(labels, dtype=np.float64)
    return {"mean": float(y.mean()), "std": max(float(y.std()), 1e-6)}


def head(model, stats: dict[str, float]):
    """The trained module: the network's first output, back in the target's units."""
    from .torch_heads import Standardized

    return Standardized(model, stats["mean"], stats["std"])


def deploy(model):
    from .torch_heads import WithPrediction

    return WithPrediction(model)


class Objective:
    """Per batch: the loss on the standardized target (mse, mae or huber, so that its scale and
    huber's threshold mean the same for any target), and the squared errors in target units
    (the epoch's rmse)."""

    metric = "rmse"

    def __init__(self, loss_name: str = "auto", stats: dict[str, float] | None = None):
        name = "mse" if loss_name == "auto" else loss_name
        if name not in LOSSES:
            from ..pipeline.config import ConfigError

            raise ConfigError(
                f"train.loss is {loss_name!r}; a regression model trains with one of "
                f"{['auto', *LOSSES]}.",
                key="train.loss",
            )
        self.name = name
        stats = stats or {"mean": 0.0, "std": 1.0}
        self.mean, self.std = float(stats["mean"]), float(stats["std"])

    def loss(self, outputs, targets):
        import torch.nn.functional as F

        z = (outputs[:, 0] - self.mean) / self.std
        t = (targets.to(outputs.dtype) - self.mean) / self.std
        fn = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}[self.name]
        return fn(z, t)

    def score(self, outputs, targets):
        return ((outputs[:, 0].float() - targets.float()) ** 2).sum()

    def zero(self, device):
        import torch

        return torch.zeros((), device=device)

    def finish(self, score_sum, count):
        return (score_sum / count).sqrt()


def predicted(outputs) -> np.ndarray:
    """Predictions [N] of the model's outputs [N, 1] (a tensor), as numpy float64."""
    return outputs[:, 0].double().cpu().numpy()


# ----------------------------------------------------------------------------- test metrics


def _numbers(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"regression {name}: expected a 1-d array of numbers, got {array.dtype}")
    return array


def metrics(actual, predicted, classes: list[str] | None = None) -> dict[str, float]:
    """rmse, mae and r2 (the coefficient of determination, as scikit-learn's r2_score: 1.0 for
    a constant target predicted exactly, 0.0 for one predicted otherwise). `classes` is unused
    (the same call as classification's)."""
    y = _numbers(actual, "actual").astype(np.float64)
    p = _numbers(predicted, "predicted").astype(np.float64)
    if len(y) != len(p) or not len(y):
        raise ValueError(f"regression metrics: {len(y)} actual values, {len(p)} predicted")
    err = p - y
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    # A constant target: sklearn's convention (perfect = 1, anything else = 0), not NaN.
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float(ss_res == 0)
    return {
        "rmse": math.sqrt(ss_res / len(y)),
        "mae": float(np.mean(np.abs(err))),
        "r2": r2,
    }


def _text(value) -> str:
    """A number as the shortest text that reads back to the same value of its own dtype
    (a float32 prediction stays short)."""
    return str(value)


def evaluation_files(actual, predicted, classes: list[str] | None = None) -> dict[str, str]:
    """The evaluate stage's files besides metrics.json, {name under reports/eval/: text}:
    predictions.csv (`actual,predicted` per test item, the significance test's input) and
    plots/residuals.csv (`actual,predicted,residual`, residual = actual - predicted; the data of
    the predicted-vs-actual and residual plots)."""
    y, p = _numbers(actual, "actual"), _numbers(predicted, "predicted")
    if len(y) != len(p):
        raise ValueError(f"regression predictions: {len(y)} actual values, {len(p)} predicted")
    residual = y.astype(np.float64) - p.astype(np.float64)
    pairs, plot = io.StringIO(), io.StringIO()
    csv.writer(pairs, lineterminator="\n").writerows(
        [["actual", "predicted"]] + [[_text(a), _text(b)] for a, b in zip(y, p, strict=True)]
    )
    csv.writer(plot, lineterminator="\n").writerows(
        [["actual", "predicted", "residual"]]
        + [[_text(a), _text(b), _text(r)] for a, b, r in zip(y, p, residual, strict=True)]
    )
    return {"predictions.csv": pairs.getvalue(), "plots/residuals.csv": plot.getvalue()}


# ------------------------------------------------------------------------------ significance


def read_predictions(text: str, source: str) -> tuple[list[float], list[float]]:
    """(actual, predicted) numbers of a predictions CSV; a value that is not a finite number is
    named with its row (the header is row 1)."""
    columns = read_columns(text, source)
    out: tuple[list[float], list[float]] = ([], [])
    for column, values, numbers in zip(("actual", "predicted"), columns, out, strict=True):
        for row, value in enumerate(values, start=2):
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if not math.isfinite(number):
                raise NotComparable(
                    f"{source}: row {row}: '{column}' is {value!r}, not a finite number."
                )
            numbers.append(number)
    return out


def compare(
    actual: list[float],
    base_pred: list[float],
    head_pred: list[float],
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Any]:
    """Significance of head vs base on one test set: {metric: {improved, worsened, p_value,
    ci95, delta, significant, test}, ..., "task": "regression", "verdict": ...}."""
    check_lengths(actual, base_pred, head_pred)
    y = np.asarray(actual, dtype=np.float64)
    err_b = np.asarray(base_pred, dtype=np.float64) - y
    err_h = np.asarray(head_pred, dtype=np.float64) - y
    abs_b, abs_h = np.abs(err_b), np.abs(err_h)
    sq_b, sq_h = err_b**2, err_h**2
    improved, worsened = int(np.sum(abs_h < abs_b)), int(np.sum(abs_h > abs_b))

    deltas: dict[str, list[np.ndarray]] = {"rmse": [], "mae": []}
    for sample in bootstrap_samples(len(y), resamples, seed):
        deltas["rmse"].append(
            np.sqrt(sq_h[sample].mean(axis=1)) - np.sqrt(sq_b[sample].mean(axis=1))
        )
        deltas["mae"].append(abs_h[sample].mean(axis=1) - abs_b[sample].mean(axis=1))
    point = {
        "rmse": math.sqrt(sq_h.mean()) - math.sqrt(sq_b.mean()),
        "mae": float(abs_h.mean() - abs_b.mean()),
    }
    paired = {"rmse": (sq_h - sq_b, "squared error"), "mae": (abs_h - abs_b, "absolute error")}
    out: dict[str, Any] = {"task": NAME}
    for metric in SIGNIFICANCE_METRICS:
        differences, what = paired[metric]
        _, p_value, method = wilcoxon(differences)
        low, high = np.percentile(np.concatenate(deltas[metric]), [2.5, 97.5])
        out[metric] = {
            "improved": improved,
            "worsened": worsened,
            "delta": round(point[metric], 6),
            "p_value": round(p_value, 6),
            "ci95": [round(float(low), 6), round(float(high), 6)],
            "significant": p_value < ALPHA,
            "test": f"Wilcoxon signed-rank on per-item {what} ({method}); "
            f"paired bootstrap ({resamples} resamples, seed {seed})",
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
        f"Of {sig['n']} test items, head's absolute error is **smaller on {first['improved']}** "
        f"and **larger on {first['worsened']}** than base's."
    )
