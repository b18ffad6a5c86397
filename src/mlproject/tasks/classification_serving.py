"""The server's side of classification (NumPy only): what a served classifier answers.

Every task's serving module has this protocol; `mlproject.serve` finds it by name
(`serve.task.serving(name)`: `mlproject.tasks.<task>_serving`) and never branches on the task:

    bind(card, outputs, profile) -> a bound object, built once per model, with
      .classes                  the card's class names ([] when the task has none)
      .extensions               Open Inference Protocol extensions it adds (GET /v2)
      .summary                  /predict's summary line in the OpenAPI document
      .answer_schema            the JSON schema of one item of /predict's answer
      .csv_header               `make predict`'s columns after `id`
      .answers(results, top_k)  /predict's answer per item (a dict each)
      .csv_rows(results)        `make predict`'s cells per item (after the id)
      .observer(metrics)        -> observe(api, results): the server's metrics of what it
                                predicts (`metrics` makes the instruments: serve.metrics)
      .log_output               which of the model's outputs the prediction log records
      .log_options()            the LogConfig fields its log format reads
    log_format(config) -> an object whose .fields(scores) gives, per record, the JSON members
                          that follow "features" in the prediction log's line
    answer_problem(card, item) -> what is wrong with one /predict answer item, or None
                          (the release's smoke test, mlproject.ops.smoke)

`results` is the model's outputs of one run, in the graph's order (onnxruntime's list).
Here: the answer is a class name with its probability; the log records "predicted" (the class
name) and "confidence" (its probability); metrics count the predicted classes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

PROBS_NAME = "probabilities"  # the exported graph's softmax output (tasks.torch_heads)
ANSWER_SCHEMA = {
    "type": "object",
    "required": ["input", "id", "class", "confidence", "top_k"],
    "properties": {
        "input": {"type": "string"},
        "id": {"type": "string"},
        "class": {"type": "string"},
        "confidence": {"type": "number"},
        "top_k": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "class": {"type": "string"},
                    "probability": {"type": "number"},
                },
            },
        },
    },
}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def bind(card: dict[str, Any], outputs: list, profile: dict[str, Any] | None = None):
    """The classification side of a loaded model; ValueError naming the card's output when the
    graph lacks it (`outputs`: the graph's TensorSpecs, in its order)."""
    return ClassificationServing(card, outputs)


class ClassificationServing:
    extensions = ("classification",)
    summary = "Classify items: image files or pixel arrays; table rows (JSON) or a CSV file"
    answer_schema = ANSWER_SCHEMA
    csv_header = ("class", "probability")

    def __init__(self, card: dict[str, Any], outputs: list):
        self.classes = list(card["classes"])
        if not self.classes:
            raise ValueError("the card of a classifier lists no `classes`")
        index = {t.name: i for i, t in enumerate(outputs)}
        logits = card["output"]["name"]
        if logits not in index:
            raise ValueError(f"the graph has no output {logits!r} (the card's output)")
        self.logits_index = index[logits]
        # The graph's own softmax when it has one (no work per request), else the logits.
        self.scores_are_logits = PROBS_NAME not in index
        self.log_output = self.logits_index if self.scores_are_logits else index[PROBS_NAME]

    def probabilities(self, results: list[np.ndarray]) -> np.ndarray:
        scores = results[self.log_output]
        return softmax(scores) if self.scores_are_logits else scores

    def answers(self, results: list[np.ndarray], top_k: int) -> list[dict[str, Any]]:
        """Per item: the class, its probability and the top_k classes (at most all)."""
        probs = self.probabilities(results)
        classes = self.classes
        top = np.argsort(-probs, axis=1, kind="stable")[:, : min(top_k, len(classes))]
        return [
            {
                "class": classes[row[0]],
                "confidence": round(float(p[row[0]]), 6),
                "top_k": [{"class": classes[c], "probability": round(float(p[c]), 6)} for c in row],
            }
            for row, p in zip(top, probs, strict=True)
        ]

    def csv_rows(self, results: list[np.ndarray]) -> list[list[str]]:
        probs = self.probabilities(results)
        best = probs.argmax(axis=1)
        return [
            [self.classes[c], f"{float(p[c]):.6f}"]
            for c, p in zip(best.tolist(), probs, strict=True)
        ]

    def observer(self, metrics):
        """Count the predicted classes (argmax of the logits: the same class as of the
        probabilities, without a softmax on the hot path), by API."""
        counter = metrics.counter(
            "mlserve_predictions", "Predicted classes (argmax), by API", ["api", "class_name"]
        )
        classes, index, cache, inc = self.classes, self.logits_index, {}, counter.inc

        def observe(api: str, results: list[np.ndarray]) -> None:
            children = cache.get(api)
            if children is None:  # label lookups once per API
                children = cache[api] = [counter.labels(api, c) for c in classes]
            predicted = results[index].argmax(axis=1)
            if len(predicted) == 1:
                inc(children[int(predicted[0])])
                return
            counts = np.bincount(predicted, minlength=len(classes))
            for c in np.flatnonzero(counts):
                inc(children[c], int(counts[c]))

        return observe

    def log_options(self) -> dict[str, Any]:
        return {"classes": self.classes, "scores_are_logits": self.scores_are_logits}


class LogFormat:
    """`"predicted": "<class>", "confidence": <probability>` per record (null when the
    probability is not finite: only a broken model gives one)."""

    def __init__(self, classes: list[str], scores_are_logits: bool = False):
        self.class_json = np.array([json.dumps(c) for c in classes], dtype=object)
        self.logits = scores_are_logits

    def predictions(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class index and its probability per item."""
        if self.logits:
            scores = softmax(scores)
        predicted = scores.argmax(axis=1)
        return predicted, scores[np.arange(len(scores)), predicted].astype(np.float64)

    def fields(self, scores: np.ndarray) -> list[str]:
        predicted, confidence = self.predictions(scores)
        names = self.class_json[predicted].tolist()
        conf = [f"{c:.6g}" if np.isfinite(c) else "null" for c in confidence.tolist()]
        return [
            f'"predicted": {name}, "confidence": {c}' for name, c in zip(names, conf, strict=True)
        ]


def log_format(config) -> LogFormat:
    """The log format of a LogConfig (serve.predlog.writer) of a classifier."""
    return LogFormat(config.classes, config.scores_are_logits)


def answer_problem(card: dict[str, Any], item: Any) -> str | None:
    """None when a /predict answer item names one of the card's classes."""
    if not isinstance(item, dict) or item.get("class") not in card["classes"]:
        return f"no class name of the card in the answer item {str(item)[:200]}"
    return None
