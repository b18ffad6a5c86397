"""The OpenAPI documents of the server's routes: request and response schemas, error answers.

Kept apart from the handlers: they are data, read by FastAPI when it builds /openapi.json and by
schemathesis when it fuzzes the server. `document()` adds operations for routes that FastAPI
does not build itself (the inference routes, served by a plain ASGI endpoint: see protocol.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .encoding import JSON_TYPE

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


def ok_schema(props: dict) -> dict:
    return {
        200: {
            "description": "OK",
            "content": {JSON_TYPE: {"schema": {"type": "object", "properties": props}}},
        }
    }


def path_params(*names: str) -> list[dict]:
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]


MODEL_METADATA = ok_schema(
    {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": TENSOR_SCHEMA, "minItems": 1},
        "outputs": {"type": "array", "items": TENSOR_SCHEMA},
    }
) | {404: ERRORS[404]}
MODEL_READY = ok_schema({"name": {"type": "string"}, "ready": {"type": "boolean"}}) | {
    404: ERRORS[404]
}
LIVE = ok_schema({"live": {"type": "boolean"}})
READY = ok_schema({"ready": {"type": "boolean"}})
SERVER_METADATA = ok_schema(
    {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    }
)
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
PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
            JSON_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "description": "images as pixel arrays, values 0..255: [height][width] "
                            "(grayscale) or [height][width][channels] (channels 1, 3 or 4)",
                            "items": {"type": "array"},
                        }
                    },
                },
                "example": {"instances": [[[0, 255], [255, 0]]]},
            },
        },
    }
}


def predict_response(item_schema: dict[str, Any]) -> dict:
    """/predict's answers: one item per input, in order, as the model's task writes it
    (`item_schema`: mlproject.tasks.<task>_serving's answer_schema)."""
    return {
        200: {
            "description": "One prediction per input, in order, each with its id",
            "content": {
                JSON_TYPE: {
                    "schema": {
                        "type": "object",
                        "required": ["model", "id", "predictions"],
                        "properties": {
                            "model": {"type": "string"},
                            "model_sha256": {"type": "string"},
                            "id": {
                                "type": "string",
                                "description": "the request's id (X-Request-ID, or made here)",
                            },
                            "predictions": {"type": "array", "items": item_schema},
                        },
                    }
                }
            },
        },
        **{k: v for k, v in ERRORS.items() if k != 404},
        422: ERRORS[400] | {"description": "A query parameter is out of range"},
    }


def operation(
    tag: str, summary: str, operation_id: str, responses: dict, extra: dict[str, Any]
) -> dict[str, Any]:
    """One operation, as FastAPI writes it for a route with these arguments."""
    return {
        "tags": [tag],
        "summary": summary,
        "operationId": operation_id,
        "responses": {str(code): value for code, value in responses.items()},
        **extra,
    }


def document(app: FastAPI, operations: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Add `{path: {method: operation}}` to the app's OpenAPI schema, ahead of the paths
    FastAPI documents from its own routes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema["paths"] = {**operations, **schema["paths"]}
        return app.openapi_schema

    app.openapi = openapi
