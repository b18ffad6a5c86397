"""Open Inference Protocol (KServe V2 / Triton) over REST: the routes, health, metadata, inference.

Parsing is in parsing.py, encoding in encoding.py, the OpenAPI documents in openapi.py. The
inference routes are plain ASGI endpoints (`InferEndpoint`), not FastAPI routes: at batch 1,
FastAPI's request wrapper, dependency solving and exit stack cost about as much CPU as the model
run. They are documented in /openapi.json from here (`add_routes`), by the same table that
registers them, and requests reach them through `app.ServingApp`'s shorter way in (the same
middleware and error answers as every route, without FastAPI's own layers).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match, Route

from .. import __version__
from . import ids, openapi
from .encoding import HEADER_LENGTH_BYTES, JSON_TYPE, encode_infer_response, response_headers
from .errors import RequestError
from .model import Model
from .parsing import decode_body, parse_infer_request, split_body

EXTENSIONS = ["binary_tensor_data"]  # and the task's (a classifier's: classification)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type=JSON_TYPE)


def check_model(model: Model, name: str, version: str | None = None) -> None:
    """404 unless the path names the served model (and its version, when it gives one)."""
    if name != model.name:
        raise RequestError(
            404, f"model name: unknown model {name!r}; this server serves {model.name!r}"
        )
    if version is not None and version != model.version:
        raise RequestError(
            404,
            f"model version: unknown version {version!r} of {name!r}; "
            f"available: [{model.version!r}]",
        )


# Handlers take only the Request and read path parameters themselves: FastAPI's per-request
# parameter validation costs more than the model run, and every check here names its field.


async def live(request: Request) -> Response:
    return _json({"live": True})


async def ready(request: Request) -> Response:
    return _json({"ready": request.app.state.server.ready})


async def server_metadata(request: Request) -> Response:
    extensions = EXTENSIONS + list(request.app.state.server.model.task.extensions)
    return _json({"name": "mlproject", "version": __version__, "extensions": extensions})


def _model_of(request: Request) -> Model:
    model: Model = request.app.state.server.model
    params = request.path_params
    check_model(model, params["name"], params.get("version"))
    return model


async def model_metadata(request: Request) -> Response:
    return _json(_model_of(request).metadata())


async def model_ready(request: Request) -> Response:
    model = _model_of(request)
    return _json({"name": model.name, "ready": request.app.state.server.ready})


async def read_body(receive) -> bytes:
    """The whole request body, as Starlette's Request.body() reads it."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        return message.get("body", b"")  # the common case: one message
    chunks = []
    while True:
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
        message = await receive()


class InferEndpoint:
    """POST /v2/models/{name}[/versions/{version}]/infer, as a plain ASGI app behind the app's
    middleware, metrics and error handlers (a RequestError raised here is answered by the app's
    handler, as for any route)."""

    async def __call__(self, scope, receive, send) -> None:
        server = scope["app"].state.server
        model: Model = server.model
        params = scope["path_params"]
        check_model(model, params["name"], params.get("version"))
        encoding = header_length = header_id = None
        for key, value in scope["headers"]:  # ASGI servers give header names in lower case
            if key == b"content-encoding" and encoding is None:
                encoding = value.decode("latin-1")
            elif key == HEADER_LENGTH_BYTES and header_length is None:
                header_length = value.decode("latin-1")
            elif key == ids.HEADER_BYTES and header_id is None:
                header_id = value.decode("latin-1")
        settings = server.settings
        body = decode_body(await read_body(receive), encoding, settings.max_body_bytes)
        header, binary = split_body(body, header_length)
        req = parse_infer_request(header, binary, model, settings.max_batch)
        # Every answer carries the request's id (the client's, or one made here): the
        # prediction log's records of this request carry it too (see serve.ids).
        req.id = ids.request_id(req.id, header_id)
        results = await server.infer("infer", req.feed, req.n, req.logged, req.id)
        content, json_length = encode_infer_response(model, req, results)
        headers = response_headers(content, json_length)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class AsgiRoute(Route):
    """A Starlette route to a plain ASGI endpoint that, like FastAPI's routes, puts itself in
    the scope: the metrics label requests by its path template."""

    def matches(self, scope):
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


infer = InferEndpoint()
INFER_DESCRIPTION = (
    "Runs the model on the request's tensors: JSON, or a JSON header and binary tensors "
    "(binary tensor data extension); a classifier gives top-k class strings on request "
    "(classification extension). The answer's `id` is the request's `id`, else its "
    "X-Request-ID header, else one the server made: the prediction log's records carry it."
)
NAME, VERSION = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"
TAG = "Open Inference Protocol"

# (method, path, handler, summary, responses, path parameters); the inference routes first,
# since routes are matched in order.
ROUTES = [
    ("POST", f"{NAME}/infer", infer, "Inference", openapi.INFER_RESPONSE, ("name",)),
    (
        "POST",
        f"{VERSION}/infer",
        infer,
        "Inference (one version)",
        openapi.INFER_RESPONSE,
        ("name", "version"),
    ),
    ("GET", "/v2/health/live", live, "Server liveness", openapi.LIVE, ()),
    (
        "GET",
        "/v2/health/ready",
        ready,
        "Server readiness (model loaded and warmed up)",
        openapi.READY,
        (),
    ),
    ("GET", "/v2", server_metadata, "Server metadata", openapi.SERVER_METADATA, ()),
    ("GET", NAME, model_metadata, "Model metadata", openapi.MODEL_METADATA, ("name",)),
    (
        "GET",
        VERSION,
        model_metadata,
        "Model metadata (one version)",
        openapi.MODEL_METADATA,
        ("name", "version"),
    ),
    ("GET", f"{NAME}/ready", model_ready, "Model readiness", openapi.MODEL_READY, ("name",)),
    (
        "GET",
        f"{VERSION}/ready",
        model_ready,
        "Model readiness (one version)",
        openapi.MODEL_READY,
        ("name", "version"),
    ),
]


def add_routes(app: FastAPI) -> None:
    asgi_routes, documented = [], {}
    for method, path, handler, summary, responses, params in ROUTES:
        name = "infer" if handler is infer else handler.__name__
        operation_id = f"{name}{'_version' if 'version' in params else ''}"
        doc: dict[str, Any] = {"parameters": openapi.path_params(*params)}
        if handler is infer:  # served by the plain endpoint, documented here as FastAPI would
            asgi_routes.append(AsgiRoute(path, infer, methods=[method], include_in_schema=False))
            doc |= {"description": INFER_DESCRIPTION, "requestBody": openapi.INFER_BODY}
            documented[path] = {
                method.lower(): openapi.operation(TAG, summary, operation_id, responses, doc)
            }
            continue
        app.add_api_route(
            path,
            handler,
            methods=[method],
            summary=summary,
            responses=responses,
            openapi_extra=doc,
            tags=[TAG],
            operation_id=operation_id,
        )
    # First in the route list: FastAPI's own /openapi.json and /docs routes come before ours.
    app.router.routes[0:0] = asgi_routes
    openapi.document(app, documented)
