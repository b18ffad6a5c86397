"""The friendly API: send what the model's data kind reads (image files or pixel arrays; table
rows as JSON or a CSV file), get per item what the model's task answers (a class name and
probabilities, or `{"prediction": <number>}`) with the item's id.

The kind's serving side (`model.kind.read_predict`) turns the body into the model's feed, with
the same preprocessing as training; the task's serving side (`model.task.answers`) turns the
outputs into answers; this module holds what every kind and task share: reading a multipart
form or a JSON body, the ids (serve.ids) and the answer's envelope.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import Response

from . import ids
from .encoding import JSON_TYPE
from .errors import RequestError
from .model import Model
from .openapi import predict_response


async def read_form(
    request: Request, max_files: int, noun: str, how: str
) -> list[tuple[str, bytes]] | None:
    """(name, bytes) per uploaded file of a multipart form, or None when the body is not one;
    the errors say to send `noun` and show `how`."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return None
    try:
        form = await request.form(max_files=max_files, max_fields=max_files)
    except HTTPException as exc:  # Starlette's parser: too many files, bad boundary, ...
        raise RequestError(400, f"files: {exc.detail}") from None
    items = []
    for i, (key, value) in enumerate(form.multi_items()):
        if isinstance(value, UploadFile):
            items.append((f"files[{len(items)}] ({value.filename})", await value.read()))
        elif key == "files":
            raise RequestError(400, f"files: form field {i} is text; send {noun} ({how})")
    await form.close()
    if not items:
        raise RequestError(400, f"files: no {noun} in the form ({how})")
    return items


async def read_json_body(request: Request, what: str) -> tuple[bytes, Any]:
    """(raw body, parsed JSON) of a body that is not a multipart form; 415 for another type."""
    ctype = request.headers.get("content-type", "")
    if ctype and not ctype.startswith(JSON_TYPE):
        raise RequestError(415, f"Content-Type: {ctype!r}; send {what}")
    raw = await request.body()
    try:
        return raw, orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"request body: invalid JSON ({exc})") from None


async def predict(
    request: Request,
    top_k: int | None = Query(
        None, ge=1, le=1000, description="classes per item, for a classifier (default TOP_K)"
    ),
) -> Response:
    server = request.app.state.server
    model: Model = server.model
    names, feed, n, logged, own_ids = await model.kind.read_predict(
        request, server.settings.max_batch
    )
    request_id = ids.request_id(None, request.headers.get(ids.HEADER))
    item_ids = ids.item_ids(request_id, n, own_ids)
    results = await server.infer("predict", feed, n, logged, item_ids)
    answers = model.task.answers(results, top_k or server.settings.default_top_k)
    result = {
        "model": model.name,
        "model_sha256": model.card["sha256"],
        "id": request_id,
        "predictions": [
            {"input": name, "id": item, **answer}
            for name, item, answer in zip(names, item_ids, answers, strict=True)
        ],
    }
    return Response(orjson.dumps(result), media_type=JSON_TYPE)


async def model_card(request: Request) -> Response:
    return Response(request.app.state.server.card_json, media_type=JSON_TYPE)


def add_routes(app: FastAPI) -> None:
    app.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        tags=["Friendly API"],
        summary=app.state.server.model.task.summary,
        responses=predict_response(app.state.server.model.task.answer_schema),
        # The body is the kind's: image files or pixel arrays, table rows or CSV files.
        openapi_extra=app.state.server.model.kind.predict_doc,
    )
    app.add_api_route(
        "/model",
        model_card,
        methods=["GET"],
        tags=["Friendly API"],
        summary="The model card (lineage, metrics, input spec, task, classes)",
        responses={
            200: {
                "description": "models/model_card.json as served",
                "content": {JSON_TYPE: {"schema": {"type": "object"}}},
            }
        },
    )
