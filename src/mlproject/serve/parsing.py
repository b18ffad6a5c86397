"""Open Inference Protocol (KServe V2 / Triton) requests: body decoding and parsing.

A body without Content-Type is JSON; the binary tensor data extension
(`Inference-Header-Content-Length`: a JSON header, then raw little-endian tensors) and the
classification extension (`"parameters": {"classification": k}` on a requested output) work as
https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ describes them.

Parsing is done by hand rather than by a pydantic model: it is the hot path, and each check
names the field it rejects (`inputs[0].shape`), as the protocol's `{"error": ...}` answers do.
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .errors import RequestError
from .ids import checked as checked_id
from .model import Model


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0


@dataclass
class InferRequest:
    feed: dict[str, np.ndarray]  # the ONNX feed, input name -> array, built by the kind
    n: int  # rows (items) in the batch
    logged: Any  # what the prediction log records of it (the kind's choice)
    outputs: Sequence[RequestedOutput]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


# A value beyond float32's range becomes inf and is rejected by name; numpy's warning about the
# cast says nothing more (np.errstate would silence it, at the cost of half the array's build).
warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning, __name__)

INT_ONLY = frozenset([int])
_DEFAULT_OUTPUTS: dict[tuple[tuple[str, ...], bool], tuple[RequestedOutput, ...]] = {}


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


def _load_json(text: bytes, what: str, kind: Any = None) -> Any:
    try:
        # orjson also rejects NaN and Infinity literals, which JSON does not allow.
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if kind is not None and kind.nan_literals:  # NaN is a missing value for this kind
            try:
                return json.loads(text)
            except (ValueError, UnicodeDecodeError):
                pass
        raise RequestError(400, f"{what}: invalid JSON ({exc})") from None


def tensor_data(
    tensor: dict, where: str, count: int, dtype: np.dtype, binary: bytes, offset: int
) -> tuple[np.ndarray, int]:
    """The tensor's values (flat), from `data` or from the binary section; new offset."""
    params = tensor.get("parameters")
    if params is not None or "parameters" in tensor:
        if not isinstance(params, dict):
            raise RequestError(400, f"{where}.parameters: expected an object")
        size = params.get("binary_data_size")
    else:
        size = None
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
    data = tensor.get("data")
    if type(data) is not list:
        if "data" not in tensor:
            raise RequestError(400, f"{where}.data: missing (or give parameters.binary_data_size)")
        raise RequestError(400, f"{where}.data: expected an array of numbers")
    try:
        values = np.asarray(data, dtype=dtype)  # beyond float32: inf, rejected below
    except RuntimeWarning:  # the cast's overflow warning, where warnings are errors
        raise RequestError(400, f"{where}.data: contains NaN or infinity") from None
    except (ValueError, TypeError, OverflowError):
        raise RequestError(
            400, f"{where}.data: expected a (nested) array of numbers of one shape"
        ) from None
    if values.size != count:
        raise RequestError(400, f"{where}.data: {values.size} values, but the shape needs {count}")
    return values, offset


def check_shape(shape: Any, where: str, spec: list[int], max_batch: int) -> None:
    # JSON numbers parse to int, float or bool (not an int here): compare types exactly.
    if type(shape) is not list or not INT_ONLY.issuperset(map(type, shape)):
        raise RequestError(400, f"{where}.shape: expected an array of integers")
    if len(shape) != len(spec) or any(
        d >= 0 and s != d for s, d in zip(shape[1:], spec[1:], strict=True)
    ):
        expected = ["N" if d < 0 else d for d in spec]
        raise RequestError(400, f"{where}.shape: expected {expected}, got {shape}")
    if not 1 <= shape[0] <= max_batch:
        raise RequestError(
            400,
            f"{where}.shape[0]: batch of {shape[0]}; this server takes "
            f"1 to {max_batch} items per request (MAX_BATCH)",
        )


def parse_infer_request(header: bytes, binary: bytes, model: Model, max_batch: int) -> InferRequest:
    req = _load_json(header, "request body", model.kind)
    if type(req) is not dict:
        raise RequestError(400, "request body: expected a JSON object with 'inputs'")
    request_id = req.get("id")
    if "id" in req and not isinstance(request_id, str):
        raise RequestError(400, "id: expected a string")
    if request_id:
        checked_id(request_id, "id")
    params = req.get("parameters")
    if params is None and "parameters" not in req:
        params = {}
    elif not isinstance(params, dict):
        raise RequestError(400, "parameters: expected an object")
    inputs = req.get("inputs")
    if type(inputs) is not list or not inputs:
        raise RequestError(400, "inputs: expected a non-empty array of tensors")
    feed, n, logged, offset = model.kind.decode_infer(inputs, binary, max_batch)
    if offset != len(binary):
        raise RequestError(
            400,
            f"request body: {len(binary) - offset} bytes of binary data "
            "beyond the tensors' binary_data_size",
        )
    return InferRequest(feed, n, logged, requested_outputs(req, params, model), request_id, params)


def requested_outputs(req: dict, params: dict, model: Model) -> Sequence[RequestedOutput]:
    binary_default = params.get("binary_data_output", False) is True
    if "outputs" not in req:  # every output, the same objects for every such request
        key = (model.output_names, binary_default)
        found = _DEFAULT_OUTPUTS.get(key)
        if found is None:
            found = _DEFAULT_OUTPUTS[key] = tuple(
                RequestedOutput(n, binary_default) for n in key[0]
            )
        return found
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
        if k and not model.classes:
            raise RequestError(
                400,
                f"{where}.parameters.classification: this model has no classes (its output is "
                "a number); ask for the output without it",
            )
        out.append(
            RequestedOutput(
                item["name"],
                p.get("binary_data", binary_default) is True,
                min(k, len(model.classes)),
            )
        )
    return out
