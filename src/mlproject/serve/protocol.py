"""Open Inference Protocol (KServe V2 / Triton) over REST: health, metadata, inference.

Follows https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ closely
enough that standard clients work with their defaults: a body without Content-Type is JSON, and
the binary tensor data extension (`Inference-Header-Content-Length`: a JSON header, then raw
little-endian tensors) works for inputs and outputs, as does the classification extension
(`"parameters": {"classification": k}` on a requested output).

Parsing is done by hand rather than by a pydantic model: it is the hot path, and each check
names the field it rejects (`inputs[0].shape`), as the protocol's `{"error": ...}` answers do.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match, Route

from .. import __version__
from .errors import RequestError
from .model import V2_TO_NUMPY, Model

HEADER_LENGTH = "inference-header-content-length"
HEADER_LENGTH_BYTES = HEADER_LENGTH.encode()
EXTENSIONS = ["binary_tensor_data", "classification"]
JSON_TYPE = "application/json"
JSON_BYTES = JSON_TYPE.encode()


@dataclass
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0


@dataclass
class InferRequest:
    x: np.ndarray  # float32 [N, C, H, W]
    outputs: list[RequestedOutput]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


_INT_ONLY = frozenset([int])


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding gzip/deflate, refusing to inflate past the body limit."""
    if not encoding or encoding == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.lower())
    if wbits is None:
        raise RequestError(
            415, f"Content-Encoding: {encoding!r} is not supported (gzip, deflate or none)"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestError(400, f"request body: cannot decode {encoding} ({exc})") from None
    if len(out) > limit:
        raise RequestError(
            413, f"request body: more than {limit} bytes once decompressed (MAX_BODY_BYTES)"
        )
    return out


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tensor data) per the binary tensor data extension."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 <= n <= len(body):
        raise RequestError(
            400,
            f"Inference-Header-Content-Length: {header_length!r} is not a "
            f"length within the {len(body)}-byte body",
        )
    return body[:n], body[n:]


def _load_json(text: bytes, what: str) -> Any:
    try:
        # orjson also rejects NaN and Infinity literals, which JSON does not allow.
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"{what}: invalid JSON ({exc})") from None


def _tensor_data(
    tensor: dict, where: str, count: int, dtype: np.dtype, binary: bytes, offset: int
) -> tuple[np.ndarray, int]:
    """The tensor's values (flat), from `data` or from the binary section; new offset."""
    params = tensor.get("parameters", {})
    if not isinstance(params, dict):
        raise RequestError(400, f"{where}.parameters: expected an object")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise RequestError(400, f"{where}: has both data and parameters.binary_data_size")
        if not _is_int(size) or size < 0 or offset + size > len(binary):
            raise RequestError(
                400,
                f"{where}.parameters.binary_data_size: {size!r} does not fit "
                f"the {len(binary) - offset} bytes of binary data left",
            )
        if size != count * dtype.itemsize:
            raise RequestError(
                400,
                f"{where}.parameters.binary_data_size: {size} bytes, but "
                f"the shape needs {count * dtype.itemsize}",
            )
        return np.frombuffer(binary, dtype=dtype, count=count, offset=offset), offset + size
    if "data" not in tensor:
        raise RequestError(400, f"{where}.data: missing (or give parameters.binary_data_size)")
    data = tensor["data"]
    if not isinstance(data, list):
        raise RequestError(400, f"{where}.data: expected an array of numbers")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            values = np.asarray(data, dtype=dtype).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(
            400, f"{where}.data: expected a (nested) array of numbers of one shape"
        ) from None
    if values.size != count:
        raise RequestError(400, f"{where}.data: {values.size} values, but the shape needs {count}")
    return values, offset


def parse_infer_request(header: bytes, binary: bytes, model: Model, max_batch: int) -> InferRequest:
    req = _load_json(header, "request body")
    if not isinstance(req, dict):
        raise RequestError(400, "request body: expected a JSON object with 'inputs'")
    request_id = req.get("id")
    if "id" in req and not isinstance(request_id, str):
        raise RequestError(400, "id: expected a string")
    params = req.get("parameters", {})
    if not isinstance(params, dict):
        raise RequestError(400, "parameters: expected an object")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(400, "inputs: expected a non-empty array of tensors")
    spec = model.input
    x, offset = None, 0
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise RequestError(400, f"{where}: expected an object with name, shape, datatype, data")
        name = tensor.get("name")
        if name != spec.name:
            raise RequestError(
                400, f"{where}.name: unknown input {name!r}; the model takes {spec.name!r}"
            )
        if x is not None:
            raise RequestError(400, f"{where}.name: input {name!r} given twice")
        datatype = tensor.get("datatype")
        if datatype != spec.datatype:
            raise RequestError(400, f"{where}.datatype: expected {spec.datatype}, got {datatype!r}")
        shape = tensor.get("shape")
        # JSON numbers parse to int, float or bool (not an int here): compare types exactly.
        if type(shape) is not list or not _INT_ONLY.issuperset(map(type, shape)):
            raise RequestError(400, f"{where}.shape: expected an array of integers")
        if len(shape) != len(spec.shape) or any(
            d >= 0 and s != d for s, d in zip(shape[1:], spec.shape[1:], strict=True)
        ):
            expected = ["N" if d < 0 else d for d in spec.shape]
            raise RequestError(400, f"{where}.shape: expected {expected}, got {shape}")
        if not 1 <= shape[0] <= max_batch:
            raise RequestError(
                400,
                f"{where}.shape[0]: batch of {shape[0]}; this server takes "
                f"1 to {max_batch} items per request (MAX_BATCH)",
            )
        values, offset = _tensor_data(
            tensor, where, math.prod(shape), V2_TO_NUMPY[datatype], binary, offset
        )
        # A float64 sum is finite exactly when every value is (float32 sums cannot overflow
        # it; NaN and infinities propagate), at half the cost of isfinite().all().
        if not math.isfinite(values.sum(dtype=np.float64)):
            raise RequestError(400, f"{where}.data: contains NaN or infinity")
        x = values.reshape(shape)
    if offset != len(binary):
        raise RequestError(
            400,
            f"request body: {len(binary) - offset} bytes of binary data "
            "beyond the tensors' binary_data_size",
        )
    return InferRequest(
        x=x, outputs=_requested_outputs(req, params, model), id=request_id, parameters=params
    )


def _requested_outputs(req: dict, params: dict, model: Model) -> list[RequestedOutput]:
    binary_default = params.get("binary_data_output", False) is True
    if "outputs" not in req:
        return [RequestedOutput(t.name, binary_default) for t in model.outputs]
    requested = req["outputs"]
    if not isinstance(requested, list):
        raise RequestError(400, "outputs: expected an array of {name, parameters}")
    out = []
    for i, item in enumerate(requested):
        where = f"outputs[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError(400, f"{where}.name: expected the name of an output")
        if item["name"] not in model.output_index:
            raise RequestError(
                400,
                f"{where}.name: unknown output {item['name']!r}; the model "
                f"has {list(model.output_index)}",
            )
        p = item.get("parameters", {})
        if not isinstance(p, dict):
            raise RequestError(400, f"{where}.parameters: expected an object")
        k = p.get("classification", 0)
        if not _is_int(k) or k < 0:
            raise RequestError(400, f"{where}.parameters.classification: expected a count >= 0")
        out.append(
            RequestedOutput(
                item["name"],
                p.get("binary_data", binary_default) is True,
                min(k, len(model.classes)),
            )
        )
    return out


def _classification(values: np.ndarray, k: int, classes: list[str]) -> np.ndarray:
    """Triton's classification extension: top-k 'value:index:label' strings per row."""
    top = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.array(
        [[f"{values[r, c]:f}:{c}:{classes[c]}" for c in row] for r, row in enumerate(top)],
        dtype=object,
    )


def _bytes_tensor(strings: np.ndarray) -> bytes:
    # BYTES elements are each a 4-byte little-endian length, then the bytes.
    parts = []
    for s in strings.reshape(-1):
        b = s.encode()
        parts += [len(b).to_bytes(4, "little"), b]
    return b"".join(parts)


def encode_infer_response(
    model: Model, req: InferRequest, results: list[np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body and the length of its JSON header when binary outputs follow it
    (None: the body is all JSON)."""
    outputs, blobs = [], []
    for want in req.outputs:
        value = results[model.output_index[want.name]]
        if want.classification:
            value = _classification(value, want.classification, model.classes)
            entry = {"name": want.name, "datatype": "BYTES", "shape": list(value.shape)}
            blob = _bytes_tensor(value) if want.binary else None
            data = None if want.binary else value.reshape(-1).tolist()
        else:
            value = np.ascontiguousarray(value, dtype="<f4")
            entry = {"name": want.name, "datatype": "FP32", "shape": list(value.shape)}
            blob = value.tobytes() if want.binary else None
            data = None if want.binary else value.reshape(-1)  # orjson writes arrays natively
        if blob is None:
            entry["data"] = data
        else:
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        outputs.append(entry)
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if req.id is not None:
        response["id"] = req.id
    response["outputs"] = outputs
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def response_headers(content: bytes, header_length: int | None) -> list[tuple[bytes, bytes]]:
    """Raw response headers, as Starlette's Response would write them for this body."""
    if header_length is None:
        return [(b"content-type", JSON_BYTES), (b"content-length", b"%d" % len(content))]
    return [
        (b"content-type", b"application/octet-stream"),
        (HEADER_LENGTH_BYTES, b"%d" % header_length),
        (b"content-length", b"%d" % len(content)),
    ]


# --- routes ------------------------------------------------------------------------------------


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


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
ERRORS = {
    code: {"description": text, "content": {JSON_TYPE: {"schema": ERROR_SCHEMA}}}
    for code, text in (
        (400, "Bad request: the message names the field"),
        (404, "Unknown model or version"),
        (413, "Body over MAX_BODY_BYTES"),
        (415, "Unsupported Content-Encoding"),
    )
}

TENSOR_SCHEMA = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {"type": "array", "description": "row-major values, flat or nested"},
    },
}
INFER_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": TENSOR_SCHEMA, "minItems": 1},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
    "example": {
        "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]
    },
}
INFER_RESPONSE = {
    200: {
        "description": "Inference response (JSON, or JSON header + binary "
        "tensors when binary outputs were asked for)",
        "content": {
            JSON_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["model_name", "outputs"],
                    "properties": {
                        "model_name": {"type": "string"},
                        "model_version": {"type": "string"},
                        "id": {"type": "string"},
                        "outputs": {"type": "array", "items": TENSOR_SCHEMA},
                    },
                }
            }
        },
    },
    **ERRORS,
}


def _ok_schema(props: dict) -> dict:
    return {
        200: {
            "description": "OK",
            "content": {JSON_TYPE: {"schema": {"type": "object", "properties": props}}},
        }
    }


def _path_params(*names: str) -> list[dict]:
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]


# Handlers take only the Request and read path parameters themselves: FastAPI's per-request
# parameter validation costs more than the model run, and every check here names its field.


async def live(request: Request) -> Response:
    return _json({"live": True})


async def ready(request: Request) -> Response:
    return _json({"ready": request.app.state.server.ready})


async def server_metadata(request: Request) -> Response:
    return _json({"name": "mlproject", "version": __version__, "extensions": EXTENSIONS})


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


async def infer(request: Request) -> Response:
    """POST /v2/models/{name}[/versions/{version}]/infer. Documents the route in OpenAPI; the
    requests themselves are served by `InferEndpoint`, the same steps without FastAPI's
    per-request machinery."""
    content, headers = await _respond_to(request.scope, request.receive)
    return Response(content, headers={k.decode(): v.decode() for k, v in headers})


async def _read_body(receive) -> bytes:
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


async def _respond_to(scope, receive) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    server = scope["app"].state.server
    model: Model = server.model
    params = scope["path_params"]
    check_model(model, params["name"], params.get("version"))
    encoding = header_length = None
    for key, value in scope["headers"]:  # ASGI servers give header names in lower case
        if key == b"content-encoding" and encoding is None:
            encoding = value.decode("latin-1")
        elif key == HEADER_LENGTH_BYTES and header_length is None:
            header_length = value.decode("latin-1")
    settings = server.settings
    body = decode_body(await _read_body(receive), encoding, settings.max_body_bytes)
    header, binary = split_body(body, header_length)
    req = parse_infer_request(header, binary, model, settings.max_batch)
    results = await server.infer("infer", req.x)
    content, json_length = encode_infer_response(model, req, results)
    return content, response_headers(content, json_length)


class InferEndpoint:
    """The inference route as a plain ASGI app (a Starlette Route ahead of the documented
    FastAPI route). At batch 1 FastAPI's request wrapper, dependency solving and exit stack cost
    about as much CPU as the model run; this path skips them and keeps everything else: the
    same middleware, metrics and error handlers (a RequestError raised here is answered by the
    app's handler, as for any route)."""

    async def __call__(self, scope, receive, send) -> None:
        content, headers = await _respond_to(scope, receive)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


class ConstantEndpoint:
    """The benchmark's ceiling (BENCH_ENDPOINT=1): built exactly as `InferEndpoint` is (a plain
    ASGI route, the same middleware, metrics and body read) but answering a fixed body, an
    /infer response computed once, instead of parsing, running the model and encoding."""

    def __init__(self, content: bytes):
        self.content = content
        self.headers = response_headers(content, None)

    async def __call__(self, scope, receive, send) -> None:
        await _read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.content})


class FloorEndpoint:
    """The benchmark's floor (BENCH_ENDPOINT=1): the least work any JSON /infer must do on this
    stack, and nothing else. It decodes the JSON, builds the tensor, runs the model once and
    encodes both outputs, but checks nothing, batches nothing and counts nothing. /infer cannot
    be faster than this row; the gap between it and the constant endpoint is the model's share."""

    def __init__(self, model: Model):
        self.model = model
        self.version = model.version

    async def __call__(self, scope, receive, send) -> None:
        tensor = orjson.loads(await _read_body(receive))["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        results = self.model.run(x)
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


class InferRoute(Route):
    """A Starlette route that, like FastAPI's, puts itself in the scope: the metrics label
    requests by its path template."""

    def matches(self, scope):
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


MODEL_METADATA = _ok_schema(
    {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": TENSOR_SCHEMA, "minItems": 1},
        "outputs": {"type": "array", "items": TENSOR_SCHEMA},
    }
) | {404: ERRORS[404]}
MODEL_READY = _ok_schema({"name": {"type": "string"}, "ready": {"type": "boolean"}}) | {
    404: ERRORS[404]
}
INFER_BODY = {
    "required": True,
    "content": {
        JSON_TYPE: {"schema": INFER_REQUEST_SCHEMA},
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
            "description": "binary tensor data extension: a JSON header of "
            "Inference-Header-Content-Length bytes, then the tensors",
        },
    },
}
NAME, VERSION = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"

# (method, path, handler, summary, responses, path parameters); the hot route first, since
# routes are matched in order.
ROUTES = [
    ("POST", f"{NAME}/infer", infer, "Inference", INFER_RESPONSE, ("name",)),
    (
        "POST",
        f"{VERSION}/infer",
        infer,
        "Inference (one version)",
        INFER_RESPONSE,
        ("name", "version"),
    ),
    (
        "GET",
        "/v2/health/live",
        live,
        "Server liveness",
        _ok_schema({"live": {"type": "boolean"}}),
        (),
    ),
    (
        "GET",
        "/v2/health/ready",
        ready,
        "Server readiness (model loaded and warmed up)",
        _ok_schema({"ready": {"type": "boolean"}}),
        (),
    ),
    (
        "GET",
        "/v2",
        server_metadata,
        "Server metadata",
        _ok_schema(
            {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            }
        ),
        (),
    ),
    ("GET", NAME, model_metadata, "Model metadata", MODEL_METADATA, ("name",)),
    (
        "GET",
        VERSION,
        model_metadata,
        "Model metadata (one version)",
        MODEL_METADATA,
        ("name", "version"),
    ),
    ("GET", f"{NAME}/ready", model_ready, "Model readiness", MODEL_READY, ("name",)),
    (
        "GET",
        f"{VERSION}/ready",
        model_ready,
        "Model readiness (one version)",
        MODEL_READY,
        ("name", "version"),
    ),
]


def add_routes(app: FastAPI) -> None:
    for method, path, handler, summary, responses, params in ROUTES:
        extra: dict[str, Any] = {"parameters": _path_params(*params)}
        if handler is infer:
            extra["requestBody"] = INFER_BODY
        app.add_api_route(
            path,
            handler,
            methods=[method],
            summary=summary,
            responses=responses,
            openapi_extra=extra,
            tags=["Open Inference Protocol"],
            operation_id=f"{handler.__name__}{'_version' if 'version' in params else ''}",
        )
    # The inference routes are served by the plain ASGI endpoint, matched first (routes are
    # tried in order, and FastAPI's own /openapi.json and /docs routes come before ours); the
    # FastAPI routes above stay, for the OpenAPI schema.
    endpoint = InferEndpoint()
    for i, path in enumerate((f"{NAME}/infer", f"{VERSION}/infer")):
        app.router.routes.insert(
            i, InferRoute(path, endpoint, methods=["POST"], include_in_schema=False)
        )


def add_bench_routes(app: FastAPI, model: Model) -> None:
    """POST /bench/constant (the stack's ceiling: the cheapest constant endpoint this app can
    serve, made like the inference route), POST /bench/floor (the least model work on the same
    route) and POST /bench/constant-fastapi (the constant from an ordinary FastAPI route, for
    comparison). None is in the OpenAPI schema."""
    x = np.zeros([1, *model.input.shape[1:]], dtype=np.float32)
    content, _ = encode_infer_response(
        model, InferRequest(x=x, outputs=_requested_outputs({}, {}, model)), model.run(x)
    )
    # First in the route list: matched before anything else, /infer included.
    for path, endpoint in (
        ("/bench/constant", ConstantEndpoint(content)),
        ("/bench/floor", FloorEndpoint(model)),
    ):
        app.router.routes.insert(
            0, InferRoute(path, endpoint, methods=["POST"], include_in_schema=False)
        )

    @app.post("/bench/constant-fastapi", include_in_schema=False)
    async def bench_constant_fastapi(request: Request) -> Response:
        await request.body()
        return Response(content, media_type=JSON_TYPE)
