"""Benchmark routes (BENCH_ENDPOINT=1 only, never in the OpenAPI schema): the constant
endpoint (the stack's ceiling) and the floor (the least model work any JSON /infer must do),
both made like the inference route, so that `make bench-serve` can show where /infer's time goes.
"""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from .encoding import JSON_TYPE, encode_infer_response, response_headers
from .model import V2_TO_NUMPY, Model
from .parsing import InferRequest, requested_outputs
from .protocol import AsgiRoute, read_body

DTYPES = {**V2_TO_NUMPY, "BYTES": object}


class ConstantEndpoint:
    """The benchmark's ceiling (BENCH_ENDPOINT=1): built exactly as `InferEndpoint` is (a plain
    ASGI route, the same middleware, metrics and body read) but answering a fixed body, an
    /infer response computed once, instead of parsing, running the model and encoding."""

    def __init__(self, content: bytes):
        self.content = content
        self.headers = response_headers(content, None)

    async def __call__(self, scope, receive, send) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.content})


class FloorEndpoint:
    """The benchmark's floor (BENCH_ENDPOINT=1): the least work any JSON /infer must do on this
    stack, and nothing else. It decodes the JSON, builds the tensors (one per input), runs the
    model once and encodes both outputs, but checks nothing, batches nothing and counts
    nothing. /infer cannot be faster than this row; the gap between it and the constant endpoint
    is the model's share."""

    def __init__(self, model: Model):
        self.model = model
        self.version = model.version
        self.dtypes = {t.name: DTYPES.get(t.datatype, object) for t in model.inputs}

    async def __call__(self, scope, receive, send) -> None:
        tensors = orjson.loads(await read_body(receive))["inputs"]
        feed = {
            t["name"]: np.asarray(t["data"], dtype=self.dtypes[t["name"]]).reshape(t["shape"])
            for t in tensors
        }
        results = self.model.run(feed)
        content = orjson.dumps(
            {
                "model_name": self.model.name,
                "model_version": self.version,
                "outputs": [
                    {"name": t.name, "datatype": "FP32", "shape": r.shape, "data": r.reshape(-1)}
                    for t, r in zip(self.model.outputs, results, strict=True)
                ],
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        headers = response_headers(content, None)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def add_bench_routes(app: FastAPI, model: Model) -> None:
    """POST /bench/constant (the stack's ceiling: the cheapest constant endpoint this app can
    serve, made like the inference route), POST /bench/floor (the least model work on the same
    route) and POST /bench/constant-fastapi (the constant from an ordinary FastAPI route, for
    comparison). None is in the OpenAPI schema."""
    feed = model.kind.warmup(1)
    request = InferRequest(feed, 1, None, requested_outputs({}, {}, model))
    content, _ = encode_infer_response(model, request, model.run(feed))
    # First in the route list: matched before anything else, /infer included.
    for path, endpoint in (
        ("/bench/constant", ConstantEndpoint(content)),
        ("/bench/floor", FloorEndpoint(model)),
    ):
        app.router.routes.insert(
            0, AsgiRoute(path, endpoint, methods=["POST"], include_in_schema=False)
        )

    @app.post("/bench/constant-fastapi", include_in_schema=False)
    async def bench_constant_fastapi(request: Request) -> Response:
        await request.body()
        return Response(content, media_type=JSON_TYPE)
