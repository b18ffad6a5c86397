"""Prometheus metrics: requests by route and status, latency, inference time, batch sizes,
what the model predicts (the task's: predicted classes, or the predicted value's histogram),
model version, and the prediction log's health.

Each app has its own registry (several apps can live in one test process); `/metrics` exposes
it with the process collector (memory, CPU, open files) included.
"""

from __future__ import annotations

import time
from bisect import bisect_left

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# `*_created` series double the exposition and no dashboard reads them.
disable_created_metrics()

PREFIX = "mlserve"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
INFERENCE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
METHODS = {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"}


class LoopHistogram(Collector):
    """A histogram for observations made on the event loop's thread only, exposed exactly as a
    prometheus_client Histogram is. The model path observes three histograms per request;
    prometheus_client takes a lock per bucket and sum update (about 1 us per observation),
    which single-threaded counting does not need."""

    def __init__(self, name: str, documentation: str, buckets, labelnames=(), registry=None):
        self.name, self.documentation = name, documentation
        self.bounds = [float(b) for b in buckets]
        self.labelnames = list(labelnames)
        self.series: dict[tuple[str, ...], list] = {}  # labels -> [bucket counts, sum]
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> list:
        """The child for these label values: pass it to observe()."""
        child = self.series.get(values)
        if child is None:  # the last count is the +Inf bucket
            child = self.series[values] = [[0] * (len(self.bounds) + 1), 0.0]
        return child

    def observe(self, value: float, child: list | None = None) -> None:
        child = child if child is not None else self.labels()
        child[0][bisect_left(self.bounds, value)] += 1  # le: value <= bound
        child[1] += value

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, (counts, total) in self.series.items():
            cumulative, buckets = 0, []
            for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric(list(values), buckets, total)
        yield family


class LoopCounter(Collector):
    """A counter for increments made on the event loop's thread only, exposed exactly as a
    prometheus_client Counter is (without `_created`), lock-free as LoopHistogram is."""

    def __init__(self, name: str, documentation: str, labelnames=(), registry=None):
        self.name, self.documentation = name, documentation
        self.labelnames = list(labelnames)
        self.series: dict[tuple[str, ...], list[float]] = {}  # labels -> [value]
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> list[float]:
        """The child for these label values: pass it to inc()."""
        child = self.series.get(values)
        if child is None:
            child = self.series[values] = [0.0]
        return child

    @staticmethod
    def inc(child: list[float], amount: float = 1) -> None:
        child[0] += amount

    def collect(self):
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, (total,) in self.series.items():
            family.add_metric(list(values), total)
        yield family


class LoopGauge(Collector):
    """An unlabelled gauge set on the event loop's thread only: `gauge.value += 1`."""

    def __init__(self, name: str, documentation: str, registry=None):
        self.name, self.documentation = name, documentation
        self.value = 0.0
        if registry is not None:
            registry.register(self)

    def collect(self):
        yield GaugeMetricFamily(self.name, self.documentation, value=self.value)


class Metrics:
    def __init__(
        self,
        model_name: str,
        version: str,
        sha256: str,
        runtime: str,
        threads: int,
        task=None,
    ):
        """`task`: the model's task serving side (mlproject.tasks.*_serving), whose observer
        makes and feeds the metrics of what the model predicts; None: no such metrics."""
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        # Everything a request observes is observed on the event loop's thread: lock-free
        # collectors (LoopCounter, LoopGauge, LoopHistogram), exposed as prometheus_client's own.
        self.requests = LoopCounter(
            f"{PREFIX}_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = LoopHistogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from request to response, by route template",
            buckets=LATENCY_BUCKETS,
            labelnames=["route"],
            registry=registry,
        )
        self.inference = LoopHistogram(
            f"{PREFIX}_inference_duration_seconds",
            "onnxruntime run time, per run (one run may serve several requests)",
            buckets=INFERENCE_BUCKETS,
            registry=registry,
        )
        self.run_rows = LoopHistogram(
            f"{PREFIX}_inference_batch_rows",
            "Rows per onnxruntime run (requests' items after dynamic batching)",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self._inference_child = self.inference.labels()
        self._run_rows_child = self.run_rows.labels()
        self.batch = LoopHistogram(
            f"{PREFIX}_batch_size",
            "Items per inference request, by API",
            labelnames=["api"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.in_progress = LoopGauge(
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
            "Prediction records handed to the prediction log's writer process",
            registry=registry,
        )
        self.predlog_dropped = Counter(
            f"{PREFIX}_prediction_log_dropped",
            "Prediction records dropped: the log's queue was full or its writer had died",
            registry=registry,
        )
        self._request_children: dict[tuple[str, str, int], tuple] = {}
        self._batch_children: dict[str, list] = {}
        self._observe_predictions = (
            task.observer(self) if task is not None else lambda api, results: None
        )

    # A task's observer makes its instruments with these (it imports nothing from here).
    def counter(self, name: str, documentation: str, labelnames) -> LoopCounter:
        """A counter in this registry: `c.inc(c.labels(*values), n)`."""
        return LoopCounter(name, documentation, labelnames, registry=self.registry)

    def histogram(self, name: str, documentation: str, buckets, labelnames) -> LoopHistogram:
        """A histogram in this registry: `h.observe(value, h.labels(*values))`."""
        return LoopHistogram(
            name, documentation, buckets=buckets, labelnames=labelnames, registry=self.registry
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:  # label lookups cost a lock each; cache them per combination
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
            self._request_children[key] = children
        children[0][0] += 1
        self.latency.observe(seconds, children[1])

    def observe_run(self, seconds: float, rows: int) -> None:
        """One onnxruntime run; call it on the event loop's thread."""
        self.inference.observe(seconds, self._inference_child)
        self.run_rows.observe(rows, self._run_rows_child)

    def observe_items(self, api: str, n: int, results: list[np.ndarray]) -> None:
        """Items per request, and what the model predicted for them (the task's metrics)."""
        child = self._batch_children.get(api)
        if child is None:  # label lookups cost a lock each; cache them per API
            child = self._batch_children[api] = self.batch.labels(api)
        self.batch.observe(n, child)
        self._observe_predictions(api, results)

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

        in_progress = self.metrics.in_progress
        in_progress.value += 1
        try:
            await self.app(scope, receive, send_status)
        finally:
            in_progress.value -= 1
            route = scope.get("route")
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            self.metrics.observe_request(
                route.path if route is not None else "unmatched",
                method,
                status,
                time.perf_counter() - start,
            )
