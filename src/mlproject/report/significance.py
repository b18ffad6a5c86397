"""Is the change real? Base and head predict the same test items; compare them item by item.

- fixed / broken: test items head gets right and base got wrong, and the reverse;
- accuracy: the exact two-sided McNemar p-value (a binomial test on the discordant pairs);
- accuracy and f1_macro: a seeded bootstrap 95% interval of the delta (head - base), resampling
  test items (the same resample for both models); f1_macro's p-value is the bootstrap's;
- a verdict: "significant" when some metric's p-value is below ALPHA, else "within noise".

numpy only (the report job has no scipy): the binomial tail is summed exactly with integers.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np

ALPHA = 0.05
RESAMPLES = 2000
SEED = 0
METRICS = ("accuracy", "f1_macro")


class NotComparable(ValueError):
    """Base and head predictions do not cover the same test items."""


def read_predictions(text: str, source: str) -> tuple[list[str], list[str]]:
    """(actual, predicted) columns of a predictions CSV (reports/eval/predictions.csv)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"actual", "predicted"} <= set(rows[0]):
        raise NotComparable(f"{source}: expected columns 'actual' and 'predicted'.")
    return [r["actual"] for r in rows], [r["predicted"] for r in rows]


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
    if not (len(actual) == len(base_pred) == len(head_pred)) or not actual:
        raise NotComparable(
            f"base has {len(base_pred)} predictions, head {len(head_pred)}, "
            f"test set {len(actual)}: not the same test items."
        )
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
    for metric in METRICS:
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
        "significant" if any(out[m]["significant"] for m in METRICS) else "within noise"
    )
    return out


def from_texts(base_csv: str | None, head_csv: str | None) -> dict[str, Any]:
    """Significance from the two predictions CSVs; {"error": why} when it cannot be computed."""
    if base_csv is None or head_csv is None:
        side = "base" if base_csv is None else "head"
        return {"error": f"no reports/eval/predictions.csv at the {side}"}
    try:
        actual, base_pred = read_predictions(base_csv, "base predictions.csv")
        head_actual, head_pred = read_predictions(head_csv, "head predictions.csv")
        if len(head_actual) == len(actual) and head_actual != actual:
            raise NotComparable("base and head test sets differ (data or split changed).")
        return compare(actual, base_pred, head_pred)
    except NotComparable as exc:
        return {"error": str(exc)}
