"""Prometheus metrics: requests by route and status, latency, inference time, batch sizes,
predicted classes, model version, and the prediction log's health.

Each app has its own registry (several apps can live in one test process); `/metrics` exposes
it with the process collector (memory, CPU, open files) included.
"""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

# `*_created` series double the exposition and no dashboard reads them.
disable_created_metrics()

PREFIX = "mlserve"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
INFERENCE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
METHODS = {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"}


class Metrics:
    def __init__(self, model_name: str, version: str, sha256: str, runtime: str, threads: int):
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from request to response, by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            f"{PREFIX}_inference_duration_seconds",
            "onnxruntime run time, per run (one run may serve several requests)",
            buckets=INFERENCE_BUCKETS,
            registry=registry,
        )
        self.run_rows = Histogram(
            f"{PREFIX}_inference_batch_rows",
            "Rows per onnxruntime run (requests' items after dynamic batching)",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch = Histogram(
            f"{PREFIX}_batch_size",
            "Items per inference request, by API",
            ["api"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            f"{PREFIX}_predictions",
            "Predicted classes (argmax), by API",
            ["api", "class_name"],
            registry=registry,
        )
        self.in_progress = Gauge(
            f"{PREFIX}_requests_in_progress", "Requests being served", registry=registry
        )
        self.model_info = Gauge(
            f"{PREFIX}_model_info",
            "The served model (value 1)",
            ["name", "version", "sha256", "runtime", "threads"],
            registry=registry,
        )
        self.model_info.labels(model_name, version, sha256, runtime, str(threads)).set(1)
        self.predlog_records = Counter(
            f"{PREFIX}_prediction_log_records",
            "Prediction records written to the prediction log",
            registry=registry,
        )
        self.predlog_dropped = Counter(
            f"{PREFIX}_prediction_log_dropped",
            "Prediction records dropped because the log's queue was full",
            registry=registry,
        )
        self._request_children: dict[tuple[str, str, int], tuple] = {}
        self._item_children: dict[str, tuple] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:  # label lookups cost a lock each; cache them per combination
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_run(self, seconds: float, rows: int) -> None:
        self.inference.observe(seconds)
        self.run_rows.observe(rows)

    def observe_items(self, api: str, predicted: np.ndarray, classes: list[str]) -> None:
        """Items per request and predicted classes; label children cached as above."""
        children = self._item_children.get(api)
        if children is None:
            children = self._item_children[api] = (
                self.batch.labels(api),
                [self.predictions.labels(api, c) for c in classes],
            )
        children[0].observe(len(predicted))
        if len(predicted) == 1:
            children[1][int(predicted[0])].inc()
        else:
            counts = np.bincount(predicted, minlength=len(classes))
            for c in np.flatnonzero(counts):
                children[1][c].inc(int(counts[c]))

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI (no per-request task or body buffering): counts every response, errors and
    404s included, labelled by the matched route template rather than the raw path."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_progress.dec()
            route = scope.get("route")
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            self.metrics.observe_request(
                route.path if route is not None else "unmatched",
                method,
                status,
                time.perf_counter() - start,
            )
