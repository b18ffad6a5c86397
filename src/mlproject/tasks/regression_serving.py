"""The server's side of regression (NumPy only): what a served regression model answers.

The protocol is every task's (see mlproject.tasks.classification_serving). Here:

* the Open Inference Protocol output is the graph's own: `prediction`, FP32, shape [N, 1], in
  the target's units (no classification extension: a request for class strings is a 400);
* /predict answers `{"prediction": <number>}` per item, and `make predict` writes
  `id,prediction`; a number is written in the shortest form that reads back to the model's
  float32 (151.23, not 151.22999572753906); a non-finite one (a broken model) is null / empty;
* the server's metrics observe the predicted value in a histogram, `mlserve_predicted_value`
  (label `api`), whose bucket bounds are the reference profile's predicted-value quantiles
  (p05 ... p95) and its minimum and maximum, rounded to 6 significant digits: the test split's
  predictions fall about 5%, 20%, 25%, 25%, 20%, 5% between consecutive quantiles, so each
  bucket's live share compares with a known one. Without a profile (a model served without
  models/reference_profile.json) the bounds are 0 and +-10^k, k = -1..5;
* the prediction log records `"predicted": <number>` and no confidence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FALLBACK_BUCKETS = tuple(sorted([0.0, *(s * 10.0**k for k in range(-1, 6) for s in (-1, 1))]))
HISTOGRAM = "mlserve_predicted_value"
ANSWER_SCHEMA = {
    "type": "object",
    "required": ["input", "id", "prediction"],
    "properties": {
        "input": {"type": "string"},
        "id": {"type": "string"},
        "prediction": {
            "type": ["number", "null"],
            "description": "the predicted value, in the target's units (null: not finite)",
        },
    },
}


def buckets(profile: dict[str, Any] | None) -> tuple[tuple[float, ...], str]:
    """The histogram's bucket bounds and where they come from: the profile's predicted-value
    quantiles, minimum and maximum (mlproject.tasks.regression.prediction_profile)."""
    predicted = (profile or {}).get("predicted") or {}
    quantiles = predicted.get("quantiles") if isinstance(predicted, dict) else None
    values = [predicted.get("min"), predicted.get("max")] if isinstance(predicted, dict) else []
    if isinstance(quantiles, dict):
        values += list(quantiles.values())
    bounds = sorted(
        {
            float(f"{float(v):.6g}")
            for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
    )
    if len(bounds) < 2:
        return FALLBACK_BUCKETS, "fallback (no reference profile)"
    return tuple(bounds), "reference profile quantiles"


def number(value: float) -> float | None:
    """A float32 prediction as the shortest float that reads back to it; None if not finite."""
    if not math.isfinite(value):
        return None
    return float(str(np.float32(value)))


def number_text(value: float) -> str:
    """The same as text (CSV, JSON); empty for a non-finite value."""
    return str(np.float32(value)) if math.isfinite(value) else ""


def bind(card: dict[str, Any], outputs: list, profile: dict[str, Any] | None = None):
    """The regression side of a loaded model; ValueError unless the graph has the card's
    output as one number per row (FP32 [N, 1] or [N])."""
    return RegressionServing(card, outputs, profile)


class RegressionServing:
    classes: list[str] = []
    extensions: tuple[str, ...] = ()
    summary = "Predict a number per item: image files or pixel arrays; table rows or a CSV file"
    answer_schema = ANSWER_SCHEMA
    csv_header = ("prediction",)

    def __init__(self, card: dict[str, Any], outputs: list, profile: dict[str, Any] | None):
        name = card["output"]["name"]
        found = [i for i, t in enumerate(outputs) if t.name == name]
        if not found:
            raise ValueError(f"the graph has no output {name!r} (the card's output)")
        spec = outputs[found[0]]
        if spec.datatype != "FP32" or spec.shape[1:] not in ([], [1]):
            raise ValueError(
                f"output {name!r}: a regression model's prediction is FP32 [N, 1], "
                f"got {spec.datatype} {spec.shape}"
            )
        self.log_output = found[0]
        self.buckets, self.buckets_source = buckets(profile)

    def values(self, results: list[np.ndarray]) -> list[float]:
        """One predicted value per item, as Python floats of the float32 outputs."""
        return results[self.log_output].reshape(-1).tolist()

    def answers(self, results: list[np.ndarray], top_k: int) -> list[dict[str, Any]]:
        return [{"prediction": number(v)} for v in self.values(results)]

    def csv_rows(self, results: list[np.ndarray]) -> list[list[str]]:
        return [[number_text(v)] for v in self.values(results)]

    def observer(self, metrics):
        """Observe each predicted value (NaN is left out: it would turn the sum into NaN)."""
        histogram = metrics.histogram(
            HISTOGRAM,
            f"The predicted value, in the target's units, by API (buckets: {self.buckets_source})",
            self.buckets,
            ["api"],
        )
        index, cache = self.log_output, {}

        def observe(api: str, results: list[np.ndarray]) -> None:
            child = cache.get(api)
            if child is None:
                child = cache[api] = histogram.labels(api)
            for v in results[index].reshape(-1).tolist():
                if v == v:
                    histogram.observe(v, child)

        return observe

    def log_options(self) -> dict[str, Any]:
        return {}


class LogFormat:
    """`"predicted": <number>` per record (null when not finite)."""

    def fields(self, scores: np.ndarray) -> list[str]:
        values = np.asarray(scores, dtype=np.float32).reshape(len(scores), -1)[:, 0].tolist()
        return [f'"predicted": {number_text(v) or "null"}' for v in values]


def log_format(config) -> LogFormat:
    """The log format of a LogConfig (serve.predlog.writer) of a regression model."""
    return LogFormat()


def answer_problem(card: dict[str, Any], item: Any) -> str | None:
    """None when a /predict answer item holds a finite predicted number."""
    value = item.get("prediction") if isinstance(item, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"no finite 'prediction' in the answer item {str(item)[:200]}"
    return None
