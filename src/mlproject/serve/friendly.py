"""The friendly API: send image files (or pixel arrays), get class names and probabilities back.

Images go through `mlproject.core.preprocess` with the spec read from the model card, the same
functions that prepared the training data, so a file is seen exactly as training saw it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Query, Request
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ..core.preprocess import ImageError, normalize, open_image, to_pixels
from .encoding import JSON_TYPE
from .errors import RequestError
from .model import Model
from .openapi import PREDICT_DOC, PREDICT_RESPONSE

# Decoding is bounded before it starts: a small PNG can declare a huge canvas.
MAX_IMAGE_PIXELS = 4096 * 4096
# Requests with fewer pixels than this in all are decoded on the event loop (see predict).
INLINE_DECODE_PIXELS = 256 * 256


def _image_pixels(data: bytes, name: str) -> int:
    """Width x height from the file's header (no decoding); 0 when unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours
        raise RequestError(
            400, f"{name}: declares an image over the {MAX_IMAGE_PIXELS}-pixel limit"
        ) from None
    except Exception:
        return 0  # pixels_from_file reports unreadable files with its own message
    if width * height > MAX_IMAGE_PIXELS:
        raise RequestError(
            400, f"{name}: {width}x{height} pixels is over the {MAX_IMAGE_PIXELS}-pixel limit"
        )
    return width * height


def _unreadable(name: str, data: bytes, exc: BaseException | None) -> str:
    """Why an upload is not an image, in words a client can act on (Pillow's own message for
    an unknown format quotes the in-memory file object it was given)."""
    if not data:
        why = "the file is empty"
    elif isinstance(exc, UnidentifiedImageError):
        why = "not a whole image in a format the server reads (PNG, JPEG, GIF, BMP, TIFF, WebP)"
    elif isinstance(exc, OSError) and "truncated" in str(exc).lower():
        why = "the image data is truncated"
    else:
        why = f"the file is corrupt ({type(exc).__name__}: {exc})"
    return f"{name}: cannot read image: {why}; send an image file (curl -F files=@image.png)"


def pixels_from_file(data: bytes, name: str, model: Model) -> np.ndarray:
    spec = model.spec
    try:
        img = open_image(data, name)
        return to_pixels(img, spec.height, spec.width, spec.channels, spec.resize)
    except ImageError as exc:
        raise RequestError(400, _unreadable(name, data, exc.__cause__)) from None
    except Exception as exc:  # Pillow raises a zoo of types on hostile files
        raise RequestError(400, _unreadable(name, data, exc)) from None


def pixels_from_array(instance: Any, name: str, model: Model) -> np.ndarray:
    try:
        arr = np.asarray(instance, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(400, f"{name}: expected a nested array of pixel values") from None
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise RequestError(
            400,
            f"{name}: expected [height][width] or [height][width][channels] "
            f"with 1, 3 or 4 channels, got shape {list(arr.shape)}",
        )
    if arr.size == 0 or arr.shape[0] * arr.shape[1] > MAX_IMAGE_PIXELS:
        raise RequestError(400, f"{name}: image of shape {list(arr.shape)} is empty or too big")
    if not np.isfinite(arr).all():
        raise RequestError(400, f"{name}: contains NaN or infinity")
    if arr.min() < 0 or arr.max() > 255:
        raise RequestError(400, f"{name}: pixel values must be within 0..255")
    img = Image.fromarray(np.rint(arr).astype(np.uint8))  # L, RGB or RGBA by shape
    spec = model.spec
    return to_pixels(img, spec.height, spec.width, spec.channels, spec.resize)


async def _read_items(request: Request, max_batch: int) -> tuple[list[tuple[str, Any]], int]:
    """(name, file bytes or pixel array) per item, from a multipart form or a JSON body; and
    the number of pixels to decode, read from the file headers or the body size."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=max_batch, max_fields=max_batch)
        except HTTPException as exc:  # Starlette's parser: too many files, bad boundary, ...
            raise RequestError(400, f"files: {exc.detail}") from None
        items, pixels = [], 0
        for i, (key, value) in enumerate(form.multi_items()):
            if isinstance(value, UploadFile):
                name, data = f"files[{len(items)}] ({value.filename})", await value.read()
                pixels += _image_pixels(data, name)
                items.append((name, data))
            elif key == "files":
                raise RequestError(
                    400,
                    f"files: form field {i} is text; send image files (curl -F files=@image.png)",
                )
        await form.close()
        if not items:
            raise RequestError(400, "files: no image files in the form (curl -F files=@image.png)")
        return items, pixels
    if ctype and not ctype.startswith(JSON_TYPE):
        raise RequestError(
            415,
            f"Content-Type: {ctype!r}; send multipart/form-data (image "
            'files) or application/json ({"instances": [...]})',
        )
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"request body: invalid JSON ({exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise RequestError(
            400, 'instances: expected {"instances": [image, ...]} with images as pixel arrays'
        )
    instances = body["instances"]
    if not instances:
        raise RequestError(400, "instances: empty; send at least one image")
    if len(instances) > max_batch:
        raise RequestError(
            400,
            f"instances: {len(instances)} images; this server takes at most "
            f"{max_batch} per request (MAX_BATCH)",
        )
    # A pixel takes at least two bytes of JSON ("0,"): the body size bounds the pixel count.
    return [(f"instances[{i}]", item) for i, item in enumerate(instances)], len(raw) // 2


def _pixels(items: list[tuple[str, Any]], model: Model) -> np.ndarray:
    """uint8 [N, C, H, W] at the model's size, as the training data was prepared."""
    return np.stack(
        [
            pixels_from_file(v, n, model)
            if isinstance(v, bytes)
            else pixels_from_array(v, n, model)
            for n, v in items
        ]
    )


def _response(items: list[tuple[str, Any]], model: Model, probs: np.ndarray, top_k: int) -> dict:
    top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    classes = model.classes
    return {
        "model": model.name,
        "model_sha256": model.card["sha256"],
        "predictions": [
            {
                "input": name,
                "class": classes[row[0]],
                "confidence": round(float(p[row[0]]), 6),
                "top_k": [{"class": classes[c], "probability": round(float(p[c]), 6)} for c in row],
            }
            for (name, _), row, p in zip(items, top, probs, strict=True)
        ],
    }


async def predict(
    request: Request,
    top_k: int | None = Query(None, ge=1, le=1000, description="classes per image (default TOP_K)"),
) -> Response:
    server = request.app.state.server
    model: Model = server.model
    items, size = await _read_items(request, server.settings.max_batch)
    k = min(top_k or server.settings.default_top_k, len(model.classes))
    # Decoding a few small images costs less than a thread hand-off; big ones would stall the
    # event loop for milliseconds, so they go to the thread pool.
    if size <= INLINE_DECODE_PIXELS:
        pixels = _pixels(items, model)
    else:
        pixels = await run_in_threadpool(_pixels, items, model)
    x = normalize(pixels, model.spec.mean, model.spec.std)
    results = await server.infer("predict", x, pixels)
    result = _response(items, model, model.probabilities(results), k)
    return Response(orjson.dumps(result), media_type=JSON_TYPE)


async def model_card(request: Request) -> Response:
    return Response(request.app.state.server.card_json, media_type=JSON_TYPE)


def add_routes(app: FastAPI) -> None:
    app.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        tags=["Friendly API"],
        summary="Classify images: files (multipart) or pixel arrays (JSON)",
        responses=PREDICT_RESPONSE,
        openapi_extra=PREDICT_DOC,
    )
    app.add_api_route(
        "/model",
        model_card,
        methods=["GET"],
        tags=["Friendly API"],
        summary="The model card (lineage, metrics, input spec, classes)",
        responses={
            200: {
                "description": "models/model_card.json as served",
                "content": {JSON_TYPE: {"schema": {"type": "object"}}},
            }
        },
    )
