"""The app factory: model, routes, limits, metrics and the prediction log, wired together.

`create_app(Settings)` loads the model (failing early with a message naming the file) and
returns an ASGI app; `python -m mlproject.serve` runs it with uvicorn.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.responses import Response
from starlette.routing import Match

from .. import __version__, tasks
from . import bench, friendly, protocol
from .batching import Batcher
from .errors import RequestError, RequestErrorMiddleware, error_response
from .metrics import Metrics, MetricsMiddleware
from .model import Model, load_model
from .predlog import LogConfig, PredictionLog
from .settings import Settings, SettingsError


@dataclass
class Server:
    """Everything a request handler needs, reachable as `request.app.state.server`."""

    settings: Settings
    model: Model
    metrics: Metrics
    card_json: bytes
    predlog: PredictionLog | None = None
    ready: bool = False
    batcher: Batcher | None = None

    async def infer(
        self,
        api: str,
        feed: dict[str, np.ndarray],
        n: int,
        logged: Any = None,
        ids: str | list[str] | None = None,
    ):
        """The model's outputs for the feed's n rows (as the kind decoded them), observed in
        metrics and the prediction log (`logged`: what the kind has the log record of them;
        `ids`: the request's id, or each item's: see serve.ids)."""
        mode = self.settings.inference
        if mode == "batch":
            results = await self.batcher.run(feed, n)
        elif mode == "inline":
            results, seconds = self._timed_run(feed)
            self.metrics.observe_run(seconds, n)
        else:  # metrics are observed on the event loop's thread, not the worker's
            results, seconds = await run_in_threadpool(self._timed_run, feed)
            self.metrics.observe_run(seconds, n)
        self.metrics.observe_items(api, n, results)
        if self.predlog is not None:
            self.model.kind.submit_log(self.predlog, api, logged, results, ids)
        return results

    def _timed_run(self, feed: dict[str, np.ndarray]) -> tuple[list[np.ndarray], float]:
        start = time.perf_counter()
        results = self.model.run(feed)
        return results, time.perf_counter() - start


class BodyLimitMiddleware:
    """413 for a body over MAX_BODY_BYTES: at once from Content-Length, or as it streams in."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit
        self.message = (
            f"request body: over the limit of {limit} bytes (MAX_BODY_BYTES); "
            "send fewer or smaller items per request"
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = self.message
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    return await error_response(413, message)(scope, receive, send)
                # The HTTP server delivers exactly Content-Length bytes: nothing to count.
                return await self.app(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise RequestError(413, message)
            return msg

        await self.app(scope, limited_receive, send)


async def _call_endpoint(scope, receive, send) -> None:
    await scope["endpoint"](scope, receive, send)


class ServingApp(FastAPI):
    """FastAPI, with a shorter way in for the plain ASGI routes (the inference routes, and the
    benchmark's): the same middleware that wraps every route (ServerErrorMiddleware, metrics,
    body limit) and the same error answers, without the layers only FastAPI routes need
    (FastAPI's telemetry, body-size and exit-stack middleware, the router's walk over every
    route). At batch 1 those layers cost about a fifth of an /infer request. Every other request,
    and any that does not match these routes exactly, goes through FastAPI as usual, as every
    request does with OTEL=1 (FastAPI's own telemetry then sees them all)."""

    fast_routes: tuple[protocol.AsgiRoute, ...] = ()
    fast_app = None  # built by create_app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self.fast_routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    scope.update(child_scope)
                    return await self.fast_app(scope, receive, send)
        await super().__call__(scope, receive, send)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _fastapi_options() -> dict:
    # Recent FastAPI emits OpenTelemetry natively and checks for providers on every request;
    # this server reports through Prometheus, so that check is pure overhead (OTEL=1 keeps it).
    if os.environ.get("OTEL") != "1" and "telemetry" in inspect.signature(FastAPI).parameters:
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    return {}


def create_app(settings: Settings | None = None, model: Model | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    model = model or load_model(
        settings.model, settings.card, settings.threads, profile_path=settings.reference_profile
    )
    metrics = Metrics(
        model.name,
        model.version,
        model.card["sha256"],
        f"onnxruntime {ort.__version__}",
        settings.threads,
        task=model.task,
    )
    server = Server(
        settings=settings,
        model=model,
        metrics=metrics,
        card_json=json.dumps(model.card).encode(),
    )
    server.batcher = Batcher(model, settings.max_batch, on_run=metrics.observe_run)
    if settings.prediction_log is not None:
        server.predlog = PredictionLog(
            LogConfig(
                directory=settings.prediction_log,
                model_name=model.name,
                model_sha256=model.card["sha256"],
                max_bytes=settings.prediction_log_max_bytes,
                keep=settings.prediction_log_files,
                task=tasks.name_of(model.card),
                **model.task.log_options(),
            ),
            scores_index=model.task.log_output,
            on_written=metrics.predlog_records.inc,
            on_dropped=metrics.predlog_dropped.inc,
            **model.kind.log_options(),
        )
        try:
            server.predlog.check()
        except OSError as exc:
            raise SettingsError(str(exc)) from None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if server.predlog is not None:
            server.predlog.start()
        # Everything alive now (the app, FastAPI and pydantic, numpy, onnxruntime's bindings)
        # lives as long as the process: move it out of the collector's sight. Full collections
        # otherwise walk all of it and stall the event loop; measured at concurrency 32, /infer's
        # p99 fell from 26-32 ms to 8-9 ms.
        gc.collect()
        gc.freeze()
        server.ready = True
        yield
        server.ready = False
        if server.predlog is not None:
            server.predlog.close()  # after uvicorn finished the in-flight requests

    app = ServingApp(
        **_fastapi_options(),
        title=f"{model.name} inference server",
        version=__version__,
        lifespan=lifespan,
        description="Open Inference Protocol (KServe V2 / Triton) and a friendly API "
        f"for the ONNX model `{model.name}` (sha256 {model.card['sha256'][:12]}).",
    )
    app.state.server = server
    protocol.add_routes(app)
    friendly.add_routes(app)

    @app.get(
        "/metrics",
        tags=["Operations"],
        summary="Prometheus metrics",
        responses={
            200: {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    if settings.bench_endpoint:
        bench.add_bench_routes(app, model)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return error_response(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return error_response(
            exc.status_code, f"{request.url.path}: {detail}", headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(422, _validation_message(exc))

    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees every status
    if os.environ.get("OTEL") != "1":
        app.fast_routes = tuple(r for r in app.router.routes if isinstance(r, protocol.AsgiRoute))
    fast_app = RequestErrorMiddleware(_call_endpoint)
    fast_app = BodyLimitMiddleware(fast_app, limit=settings.max_body_bytes)
    fast_app = MetricsMiddleware(fast_app, metrics=metrics)
    app.fast_app = ServerErrorMiddleware(fast_app)
    return app
