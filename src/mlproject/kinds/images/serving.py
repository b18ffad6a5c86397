"""The server's side of the images kind (torch-free): one FP32 [N, C, H, W] input, image files.

The serving protocol every kind's `serving` module answers (mlproject.serve asks it through
`mlproject.kinds.for_spec(card["input"]).serving` and never branches on the kind):

    bind(card, inputs) -> a bound object, built once per model, with
      .spec                     the kind's parsed input spec (here: core.preprocess.InputSpec)
      .inputs                   the model's inputs as GET /v2/models/<name> lists them
      .warmup(n)                a feed of n items (name -> array) to warm the session up
      .decode_infer(tensors, binary, max_batch) -> (feed, n, logged, offset)
                                Open Inference Protocol `inputs` (and the binary section) ->
                                the ONNX feed, its row count, what the prediction log records,
                                and how many binary bytes were read
      .read_predict(request, max_batch) -> (names, feed, n, logged, ids)    (async)
                                a /predict body -> one name per item, the feed, ..., and the
                                items' own ids (None, or a list with None where an item has
                                none: see serve.ids)
      .batch_items(path, batch) -> iterator of (ids, feed, n)  `make predict`'s input
      .predict_doc              /predict's request body, for the OpenAPI document
      .nan_literals             whether /infer's JSON may hold NaN (JSON has none; tritonclient
                                writes it for np.nan), read by a slower parser when present
      .log_options()            keyword arguments of serve.predlog.PredictionLog
      .submit_log(log, route, logged, results, ids)   hand a request's items to the log

Images go through `mlproject.core.preprocess` with the spec read from the model card, the same
functions that prepared the training data, so a file is seen exactly as training saw it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...core.preprocess import ImageError, InputSpec, normalize, open_image, to_pixels
from ...serve.errors import RequestError
from ...serve.openapi import PREDICT_DOC
from ...serve.parsing import INT_ONLY, check_shape, tensor_data

# Decoding is bounded before it starts: a small PNG can declare a huge canvas.
MAX_IMAGE_PIXELS = 4096 * 4096
# Requests with fewer pixels than this in all are decoded on the event loop (see read_predict).
INLINE_DECODE_PIXELS = 256 * 256
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")
FP32 = np.dtype("<f4")


def bind(card: dict[str, Any], inputs: list) -> ImagesServing:
    """The images side of a loaded model; ValueError unless it has one FP32 [N, C, H, W] input."""
    if len(inputs) != 1 or inputs[0].datatype != "FP32" or len(inputs[0].shape) != 4:
        raise ValueError(
            f"expected one FP32 input [N, C, H, W], got {[t.to_json() for t in inputs]}"
        )
    return ImagesServing(InputSpec.from_card(card), inputs)


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


class ImagesServing:
    nan_literals = False  # JSON's NaN is not a pixel value: a request with one is invalid JSON
    predict_doc = PREDICT_DOC  # /predict's request body in the OpenAPI document

    def __init__(self, spec: InputSpec, inputs: list):
        self.spec = spec
        self.inputs = inputs
        self.input = inputs[0]
        self._name = inputs[0].name
        rest = inputs[0].shape[1:]
        # [1, C, H, W]: the shape of a one-item request, the usual one (None: dynamic sizes).
        self.one_item_shape = [1, *rest] if all(d >= 0 for d in rest) else None

    # --------------------------------------------------------------- model
    def warmup(self, n: int) -> dict[str, np.ndarray]:
        spec = self.spec
        return {self._name: np.zeros([n, spec.channels, spec.height, spec.width], dtype=FP32)}

    def log_options(self) -> dict[str, Any]:
        return {"mean": self.spec.mean, "std": self.spec.std}

    @staticmethod
    def submit_log(log, route: str, logged: np.ndarray, results: list[np.ndarray], ids) -> None:
        # /infer logs its float tensor (un-normalized by the log), /predict its uint8 pixels.
        log.submit(route, logged, logged.dtype != np.uint8, results, ids)

    # --------------------------------------------------------------- /v2 ... /infer
    def decode_infer(
        self, inputs: list, binary: bytes, max_batch: int
    ) -> tuple[dict[str, np.ndarray], int, np.ndarray, int]:
        spec = self.input
        x, offset = None, 0
        for i, tensor in enumerate(inputs):
            if type(tensor) is not dict:
                raise RequestError(
                    400, f"inputs[{i}]: expected an object with name, shape, datatype, data"
                )
            name = tensor.get("name")
            if name != spec.name:
                raise RequestError(
                    400, f"inputs[{i}].name: unknown input {name!r}; the model takes {spec.name!r}"
                )
            if x is not None:
                raise RequestError(400, f"inputs[{i}].name: input {name!r} given twice")
            datatype = tensor.get("datatype")
            if datatype != spec.datatype:
                raise RequestError(
                    400, f"inputs[{i}].datatype: expected {spec.datatype}, got {datatype!r}"
                )
            shape = tensor.get("shape")
            # The usual request, checked in two steps: one item of the model's own size.
            if shape != self.one_item_shape or not INT_ONLY.issuperset(map(type, shape)):
                check_shape(shape, f"inputs[{i}]", spec.shape, max_batch)
            values, offset = tensor_data(
                tensor, f"inputs[{i}]", math.prod(shape), FP32, binary, offset
            )
            # A float64 sum is finite exactly when every value is (float32 sums cannot overflow
            # it; NaN and infinities propagate), at half the cost of isfinite().all().
            if not math.isfinite(values.sum(dtype=np.float64)):
                raise RequestError(400, f"inputs[{i}].data: contains NaN or infinity")
            x = values.reshape(shape)
        return {self._name: x}, len(x), x, offset

    # --------------------------------------------------------------- /predict
    def pixels_from_file(self, data: bytes, name: str) -> np.ndarray:
        spec = self.spec
        try:
            img = open_image(data, name)
            return to_pixels(img, spec.height, spec.width, spec.channels, spec.resize)
        except ImageError as exc:
            raise RequestError(400, _unreadable(name, data, exc.__cause__)) from None
        except Exception as exc:  # Pillow raises a zoo of types on hostile files
            raise RequestError(400, _unreadable(name, data, exc)) from None

    def pixels_from_array(self, instance: Any, name: str) -> np.ndarray:
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
        spec = self.spec
        return to_pixels(img, spec.height, spec.width, spec.channels, spec.resize)

    def _pixels(self, items: list[tuple[str, Any]]) -> np.ndarray:
        """uint8 [N, C, H, W] at the model's size, as the training data was prepared."""
        return np.stack(
            [
                self.pixels_from_file(v, n)
                if isinstance(v, bytes)
                else self.pixels_from_array(v, n)
                for n, v in items
            ]
        )

    async def read_predict(self, request, max_batch: int):
        """Image files (multipart `files`) or pixel arrays (JSON `instances`) -> (names, feed,
        n, uint8 pixels for the log, None: an image brings no id of its own)."""
        from starlette.concurrency import run_in_threadpool

        from ...serve.friendly import read_form, read_json_body

        form = await read_form(request, max_batch, "image files", "curl -F files=@image.png")
        if form is not None:
            items, size = [], 0
            for name, data in form:
                size += _image_pixels(data, name)
                items.append((name, data))
        else:
            raw, body = await read_json_body(
                request,
                'multipart/form-data (image files) or application/json ({"instances": [...]})',
            )
            if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
                raise RequestError(
                    400,
                    'instances: expected {"instances": [image, ...]} with images as pixel arrays',
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
            items = [(f"instances[{i}]", item) for i, item in enumerate(instances)]
            # A pixel takes at least two bytes of JSON ("0,"): the body size bounds the count.
            size = len(raw) // 2
        # Decoding a few small images costs less than a thread hand-off; big ones would stall
        # the event loop for milliseconds, so they go to the thread pool.
        if size <= INLINE_DECODE_PIXELS:
            pixels = self._pixels(items)
        else:
            pixels = await run_in_threadpool(self._pixels, items)
        x = normalize(pixels, self.spec.mean, self.spec.std)
        return [name for name, _ in items], {self._name: x}, len(x), pixels, None

    # --------------------------------------------------------------- make predict
    def _file_pixels(self, path: Path) -> np.ndarray:
        try:
            return self.pixels_from_file(path.read_bytes(), str(path))
        except RequestError as exc:  # the server's advice (curl -F ...) does not fit here
            why = exc.message.split("; send an image file")[0]
            raise RequestError(400, f"{why}; replace or remove the file") from None

    def batch_items(self, path: Path, batch: int) -> Iterator[tuple[list[str], dict, int]]:
        """An image file, or every image file under a folder (sorted, recursively): ids are
        the paths relative to the folder (the file name for one file)."""
        path = Path(path)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise RequestError(
                    400, f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder"
                )
            ids = [p.relative_to(path).as_posix() for p in files]
        else:
            files, ids = [path], [path.name]
        for start in range(0, len(files), batch):
            chunk = files[start : start + batch]
            pixels = np.stack([self._file_pixels(p) for p in chunk])
            x = normalize(pixels, self.spec.mean, self.spec.std)
            yield ids[start : start + batch], {self._name: x}, len(x)


def smoke_requests(card: dict[str, Any]) -> tuple[dict[str, Any], bytes, str]:
    """What `make smoke` (mlproject.ops.smoke) sends a running server: an Open Inference
    Protocol request of one blank image tensor, and a /predict body (a blank PNG upload) with
    its Content-Type."""
    import io

    from PIL import Image

    spec = card["input"]
    shape = [1, spec["channels"], spec["height"], spec["width"]]
    infer = {
        "inputs": [
            {
                "name": spec.get("name", "input"),
                "shape": shape,
                "datatype": "FP32",
                "data": [0.0] * (shape[1] * shape[2] * shape[3]),
            }
        ]
    }
    buffer = io.BytesIO()
    mode = {1: "L", 3: "RGB"}[spec["channels"]]
    Image.new(mode, (spec["width"], spec["height"])).save(buffer, format="PNG")
    boundary = "mlprojectsmoke"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
        f'filename="blank.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    form += buffer.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    return infer, form, f"multipart/form-data; boundary={boundary}"
