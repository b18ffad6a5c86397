"""Open Inference Protocol (KServe V2 / Triton) responses: JSON, or a JSON header followed by
binary tensors (the binary tensor data extension), and the classification extension's strings."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from .model import Model
from .parsing import InferRequest

HEADER_LENGTH = "inference-header-content-length"
HEADER_LENGTH_BYTES = HEADER_LENGTH.encode()
JSON_TYPE = "application/json"
JSON_BYTES = JSON_TYPE.encode()
FP32 = np.dtype("<f4")


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
            value = np.ascontiguousarray(value, dtype=FP32)
            entry = {"name": want.name, "datatype": "FP32", "shape": value.shape}
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
