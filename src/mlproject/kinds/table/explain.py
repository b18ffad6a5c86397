"""Explanations of a table model per raw column: permutation importance on the test split.

Shuffling one raw column breaks its link with the label while keeping its distribution (missing
values and unseen categories included), so the drop in accuracy is that column's share in the
model's decisions, whatever the encoding inside the ONNX graph (one slot or a one-hot block).
It needs only a `predict(frame) -> class indices` callable (the lead's wrapper of onnxruntime
on the raw-column feed), so it runs on the deployed model without PyTorch.

Each column gets its own generator, seeded from (seed, the column's position), so a column's
result does not depend on which other columns are explained; same inputs and seed, same bytes
of attributions.json and attributions.png.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import ProjectError
from ...core.io import atomic_path, write_json

METHOD = "permutation importance"
METRIC = "accuracy"


class ExplainError(ProjectError, ValueError):
    """The explanation's inputs do not fit; the message names the column or the length."""


def _accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(predicted == labels))


# (name, score(labels, predicted), lower is better): what a column's shuffle worsens.
ACCURACY = (METRIC, _accuracy, False)


def score(predict: Callable[[Any], Any], frame, labels: np.ndarray, metric=ACCURACY) -> float:
    predicted = np.asarray(predict(frame)).reshape(-1)
    if len(predicted) != len(labels):
        raise ExplainError(f"predict returned {len(predicted)} predictions for {len(labels)} rows.")
    return float(metric[1](labels, predicted))


def accuracy(predict: Callable[[Any], Any], frame, labels: np.ndarray) -> float:
    return score(predict, frame, labels, ACCURACY)


def permutation_importance(
    predict: Callable[[Any], Any],
    frame,
    labels: Sequence[int],
    columns: Sequence[str],
    repeats: int = 5,
    seed: int = 0,
    metric=ACCURACY,
) -> dict[str, Any]:
    """Per column: how much the metric worsens when that column alone is shuffled, `repeats`
    times (a drop in accuracy; for a lower-is-better metric such as rmse, its increase)."""
    name, _, lower_is_better = metric
    sign = -1.0 if lower_is_better else 1.0
    frame = frame.reset_index(drop=True)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(frame):
        raise ExplainError(f"{len(labels)} labels for {len(frame)} rows.")
    if not len(frame):
        raise ExplainError("no rows to explain on.")
    if repeats < 1:
        raise ExplainError(f"repeats must be at least 1, got {repeats}.")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ExplainError(
            f"column {missing[0]!r} is not in the frame (its columns: {', '.join(frame.columns)})."
        )
    baseline = score(predict, frame, labels, metric)
    results = []
    for position, column in enumerate(columns):
        rng = np.random.default_rng([seed, position])
        drops = []
        for _ in range(repeats):
            shuffled = frame.copy()
            order = rng.permutation(len(frame))
            shuffled[column] = frame[column].take(order).reset_index(drop=True)
            drops.append(sign * (baseline - score(predict, shuffled, labels, metric)))
        results.append(
            {
                "name": column,
                "importance_mean": float(np.mean(drops)),
                "importance_std": float(np.std(drops)),
                "drops": [float(d) for d in drops],
            }
        )
    results.sort(key=lambda r: (-r["importance_mean"], r["name"]))
    return {
        "method": METHOD,
        "metric": name,
        "worse": "higher" if lower_is_better else "lower",
        "baseline": baseline,
        "n": len(frame),
        "repeats": repeats,
        "seed": seed,
        "columns": results,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Horizontal bars, most important on top, with one standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = result["columns"][::-1]  # barh draws bottom-up
    names = [c["name"] for c in columns]
    y = np.arange(len(columns))
    fig, ax = plt.subplots(figsize=(6, 0.9 + 0.35 * len(columns)))
    ax.barh(
        y,
        [c["importance_mean"] for c in columns],
        xerr=[c["importance_std"] for c in columns],
        color="#4c72b0",
        ecolor="#333333",
        capsize=3,
    )
    ax.set_yticks(y, names, fontsize=8)
    ax.axvline(0.0, color="#888888", linewidth=0.8)
    change = "increase" if result.get("worse") == "higher" else "drop"
    ax.set_xlabel(f"{change} in {result['metric']} when the column is shuffled (mean ± std)")
    ax.set_title(
        f"Permutation importance on {result['n']} test rows, {result['repeats']} repeats",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def explain_table(
    predict: Callable[[Any], Any],
    frame,
    labels: Sequence[int],
    columns: Sequence[str],
    out_dir: str | Path,
    repeats: int = 5,
    seed: int = 0,
    metric=ACCURACY,
) -> dict[str, Any]:
    """Permutation importance of each raw column on (frame, labels); writes
    out_dir/attributions.png and out_dir/attributions.json (each atomically) and returns the
    JSON's content."""
    result = permutation_importance(predict, frame, labels, columns, repeats, seed, metric)
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "attributions.png") as tmp:
        plot(result, tmp)
    write_json(out_dir / "attributions.json", result)
    return result
