"""The inference server in-process: every route and every bad input, through an ASGI test
client (no socket, no pipeline run) against a tiny ONNX model made in the fixture, in seconds.

What only a real socket and the pipeline's model show (Triton's client, uvicorn, the predictions
of the evaluate stage, load, signals, Prometheus scraping) is in test_serve.py and
test_serve_ops.py.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import struct
import warnings
import zlib

import numpy as np
import onnxruntime as ort
import pytest

from mlproject.serve.app import create_app
from mlproject.serve.client import infer_body
from mlproject.serve.settings import Settings

from tooling import multipart, png, tiny_model

with warnings.catch_warnings():
    # Starlette's TestClient still runs on httpx, and says so when it is imported.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

MAX_BATCH, MAX_BODY = 64, 200_000
NAME = "tiny"
INFER = "/v2/models/{name}/infer"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model"), NAME)


@pytest.fixture(scope="module")
def app(model_files):
    model, card = model_files
    return create_app(
        Settings(model=model, card=card, max_batch=MAX_BATCH, max_body_bytes=MAX_BODY)
    )


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as test_client:  # runs the lifespan: the server is ready inside
        yield test_client


@pytest.fixture(scope="module")
def session(model_files):
    return ort.InferenceSession(str(model_files[0]), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def card(model_files):
    return json.loads(model_files[1].read_text())


def run_model(session, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x}), strict=True))


# --- Open Inference Protocol -------------------------------------------------------------------


def test_health_and_metadata(client, card):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "mlproject"
    assert server["extensions"] == ["binary_tensor_data", "classification"]
    meta = client.get(f"/v2/models/{NAME}").json()
    version = card["sha256"][:12]
    assert meta["name"] == NAME and meta["versions"] == [version]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities"]
    assert client.get(f"/v2/models/{NAME}/versions/{version}").json() == meta
    ready = client.get(f"/v2/models/{NAME}/versions/{version}/ready").json()
    assert ready == {"name": NAME, "ready": True}


@pytest.mark.parametrize("items", [1, 3])
def test_infer_json_matches_onnxruntime(client, session, card, items):
    x = np.random.default_rng(items).standard_normal((items, 1, 8, 8)).astype(np.float32)
    response = client.post(INFER.format(name=NAME), content=infer_body(x, id="req-1"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    got = response.json()
    assert got["model_name"] == NAME and got["model_version"] == card["sha256"][:12]
    assert got["id"] == "req-1"
    want = run_model(session, x)
    assert [o["name"] for o in got["outputs"]] == list(want)
    for out in got["outputs"]:
        assert out["datatype"] == "FP32" and out["shape"] == [items, 10]
        np.testing.assert_allclose(out["data"], want[out["name"]].ravel(), rtol=1e-5, atol=1e-6)


def test_infer_versioned_nested_gzip_and_no_content_type(client, session, card):
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8)
    nested = infer_body(data=x[0].tolist(), outputs=[{"name": "logits"}])
    path = f"/v2/models/{NAME}/versions/{card['sha256'][:12]}/infer"
    plain = client.post(path, content=nested)  # no Content-Type: JSON, per the protocol
    assert plain.status_code == 200, plain.text
    (out,) = plain.json()["outputs"]
    np.testing.assert_allclose(out["data"], run_model(session, x)["logits"].ravel(), rtol=1e-5)
    zipped = client.post(path, content=gzip.compress(nested), headers={"Content-Encoding": "gzip"})
    # Each answer carries its request's id: made by the server here, one per request.
    assert zipped.status_code == 200 and zipped.json()["id"] != plain.json()["id"]
    assert {**zipped.json(), "id": ""} == {**plain.json(), "id": ""}


def test_infer_binary_tensors_both_ways(client, session):
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 8)).astype(np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 1, 8, 8],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = client.post(
        INFER.format(name=NAME),
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    n = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:n])
    size = meta["outputs"][0]["parameters"]["binary_data_size"]
    got = np.frombuffer(response.content[n : n + size], "<f4").reshape(meta["outputs"][0]["shape"])
    np.testing.assert_allclose(got, run_model(session, x)["logits"], rtol=1e-5, atol=1e-6)


def test_infer_classification_extension(client, session, card):
    x = np.random.default_rng(5).standard_normal((3, 1, 8, 8)).astype(np.float32)
    body = infer_body(x, outputs=[{"name": "logits", "parameters": {"classification": 2}}])
    response = client.post(INFER.format(name=NAME), content=body)
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [3, 2]
    top = np.argsort(-run_model(session, x)["logits"], axis=1)[:, :2]
    labels = [s.split(":") for s in out["data"]]
    assert [int(lab[1]) for lab in labels] == top.ravel().tolist()
    assert [lab[2] for lab in labels] == [card["classes"][i] for i in top.ravel()]


# --- the friendly API --------------------------------------------------------------------------


def test_predict_files_and_pixel_arrays_agree(client, card):
    pixels = np.random.default_rng(6).integers(0, 256, (8, 8), dtype=np.uint8)
    body, headers = multipart([("a.png", png(pixels)), ("b.png", png(255 - pixels))])
    by_file = client.post("/predict?top_k=10", content=body, headers=headers)
    assert by_file.status_code == 200, by_file.text
    result = by_file.json()
    assert result["model"] == NAME and result["model_sha256"] == card["sha256"]
    assert [p["input"] for p in result["predictions"]] == ["files[0] (a.png)", "files[1] (b.png)"]
    by_json = client.post("/predict?top_k=10", json={"instances": [pixels.tolist()]})
    assert by_json.status_code == 200, by_json.text
    first = by_json.json()["predictions"][0]
    assert first["top_k"] == result["predictions"][0]["top_k"] and first["input"] == "instances[0]"
    default_k = client.post("/predict", content=body, headers=headers).json()["predictions"][0]
    assert len(default_k["top_k"]) == 3  # TOP_K
    assert default_k["class"] == default_k["top_k"][0]["class"] == first["class"]


def test_model_card_and_openapi_document_the_served_routes(client, app, card):
    assert client.get("/model").json() == card
    spec = client.get("/openapi.json").json()
    paths = [
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/predict",
        "/model",
        "/metrics",
    ]
    assert set(paths) <= set(spec["paths"])
    assert not [p for p in spec["paths"] if p.startswith("/bench")]
    # The inference routes are documented from the routes that serve them.
    served = {r.path for r in app.fast_routes}
    assert served == {p for p in spec["paths"] if p.endswith("/infer")}
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["operationId"] == "infer" and "requestBody" in infer
    assert set(infer["responses"]) == {"200", "400", "404", "413", "415"}
    assert client.get("/docs").status_code == 200


# --- bad input ---------------------------------------------------------------------------------


def _corrupt_png() -> bytes:
    data = bytearray(png(np.zeros((8, 8), dtype=np.uint8)))
    data[40:60] = b"\x00" * 20
    return bytes(data)


def _bomb_png() -> bytes:
    """A valid, tiny PNG that declares 5000 x 5000 pixels (1 bit deep, all black)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    side = 5000
    rows = (b"\0" + b"\0" * (side // 8)) * side
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def _binary_body(declared: int, sent: int) -> tuple[bytes, dict]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 1, 8, 8],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": declared},
                }
            ]
        }
    ).encode()
    return header + b"\0" * sent, {"Inference-Header-Content-Length": str(len(header))}


def _text_form() -> tuple[bytes, dict]:
    body = b'--b0\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--b0--\r\n'
    return body, {"Content-Type": "multipart/form-data; boundary=b0"}


JSON = {"Content-Type": "application/json"}
INFER = "/v2/models/{name}/infer"
BLANK = png(np.zeros((8, 8), np.uint8))
# fmt: off
BAD = [
    # (id, method, path, body, headers, status, words the error message must contain)
    ("wrong-shape", "POST", INFER, infer_body(shape=(1, 1, 8, 9)), {}, 400,
     ["inputs[0].shape", "[1, 1, 8, 9]"]),
    ("wrong-rank", "POST", INFER, infer_body(shape=(64,)), {}, 400, ["inputs[0].shape"]),
    ("wrong-datatype", "POST", INFER, infer_body(datatype="INT64"), {}, 400,
     ["inputs[0].datatype", "FP32", "INT64"]),
    ("nan", "POST", INFER, infer_body().replace(b"0.5", b"NaN", 1), {}, 400, ["JSON"]),
    ("infinity", "POST", INFER, infer_body().replace(b"0.5", b"Infinity", 1), {}, 400, ["JSON"]),
    ("float32-overflow", "POST", INFER, infer_body().replace(b"0.5", b"1e39", 1), {}, 400,
     ["inputs[0].data", "NaN or infinity"]),
    ("too-many-items", "POST", INFER, infer_body(shape=(MAX_BATCH + 1, 1, 8, 8)), {}, 400,
     ["inputs[0].shape[0]", "MAX_BATCH"]),
    ("empty-batch", "POST", INFER, infer_body(shape=(0, 1, 8, 8)), {}, 400,
     ["inputs[0].shape[0]"]),
    ("value-count", "POST", INFER, infer_body(data=[0.5] * 63), {}, 400,
     ["inputs[0].data", "63"]),
    ("strings", "POST", INFER, infer_body(data=["a"] * 64), {}, 400, ["inputs[0].data"]),
    ("ragged", "POST", INFER, infer_body(data=[[0.5] * 8] * 7 + [[0.5] * 7]), {}, 400,
     ["inputs[0].data"]),
    ("unknown-input", "POST", INFER, infer_body(name="pixels"), {}, 400,
     ["inputs[0].name", "pixels"]),
    ("unknown-output", "POST", INFER, infer_body(outputs=[{"name": "scores"}]), {}, 400,
     ["outputs[0].name", "scores"]),
    ("outputs-null", "POST", INFER, infer_body(outputs=None), {}, 400, ["outputs"]),
    ("no-inputs", "POST", INFER, b'{"inputs": []}', {}, 400, ["inputs"]),
    ("not-json", "POST", INFER, b"{inputs", {}, 400, ["invalid JSON"]),
    ("json-array", "POST", INFER, b"[1, 2]", {}, 400, ["JSON object"]),
    ("id-not-string", "POST", INFER, infer_body(id=5), {}, 400, ["id"]),
    ("bad-header-length", "POST", INFER, infer_body(),
     {"Inference-Header-Content-Length": "99999"}, 400, ["Inference-Header-Content-Length"]),
    ("binary-size-mismatch", "POST", INFER, *_binary_body(255, 255), 400,
     ["inputs[0].parameters.binary_data_size", "256"]),
    ("binary-extra-bytes", "POST", INFER, *_binary_body(256, 300), 400, ["44 bytes"]),
    ("bad-gzip", "POST", INFER, b"not gzip", {"Content-Encoding": "gzip"}, 400, ["gzip"]),
    ("unknown-encoding", "POST", INFER, infer_body(), {"Content-Encoding": "br"}, 415,
     ["Content-Encoding"]),
    ("body-over-limit", "POST", INFER, b"[" + b"0.5," * (MAX_BODY // 4) + b"0]", {}, 413,
     ["MAX_BODY_BYTES"]),
    ("unknown-model", "POST", "/v2/models/nope/infer", infer_body(), {}, 404, ["nope"]),
    ("unknown-version", "POST", "/v2/models/{name}/versions/9/infer", infer_body(), {}, 404,
     ["version", "'9'"]),
    ("unknown-model-metadata", "GET", "/v2/models/nope", b"", {}, 404, ["nope"]),
    ("unknown-model-ready", "GET", "/v2/models/nope/ready", b"", {}, 404, ["nope"]),
    ("unknown-route", "GET", "/v3/nothing", b"", {}, 404, ["/v3/nothing"]),
    ("wrong-method", "GET", INFER, b"", {}, 405, ["Method Not Allowed"]),
    ("corrupt-image", "POST", "/predict", *multipart([("bad.png", _corrupt_png())]), 400,
     ["files[0] (bad.png)", "cannot read image"]),
    ("not-an-image", "POST", "/predict", *multipart([("notes.txt", b"hello, world")]), 400,
     ["files[0] (notes.txt)", "cannot read image"]),
    ("huge-canvas", "POST", "/predict", *multipart([("bomb.png", _bomb_png())]), 400,
     ["files[0] (bomb.png)", "5000x5000"]),
    ("too-many-files", "POST", "/predict",
     *multipart([(f"{i}.png", BLANK) for i in range(MAX_BATCH + 1)]), 400, ["files"]),
    ("no-files", "POST", "/predict", *_text_form(), 400, ["files", "no image files"]),
    ("pixels-out-of-range", "POST", "/predict", b'{"instances": [[[0, 300], [1, 2]]]}', JSON,
     400, ["instances[0]", "0..255"]),
    ("pixels-inf", "POST", "/predict", b'{"instances": [[[0, 1e999], [1, 2]]]}', JSON, 400,
     ["request body", "invalid JSON", "infinity"]),
    ("pixels-shape", "POST", "/predict", b'{"instances": [[1, 2, 3]]}', JSON, 400,
     ["instances[0]", "shape"]),
    ("too-many-instances", "POST", "/predict",
     json.dumps({"instances": [[[0]]] * (MAX_BATCH + 1)}).encode(), JSON, 400,
     ["instances", "MAX_BATCH"]),
    ("no-instances", "POST", "/predict", b'{"images": []}', JSON, 400, ["instances"]),
    ("wrong-content-type", "POST", "/predict", b"abc", {"Content-Type": "text/plain"}, 415,
     ["Content-Type"]),
    ("top-k-zero", "POST", "/predict?top_k=0", b'{"instances": [[[0]]]}', JSON, 422, ["top_k"]),
    ("top-k-text", "POST", "/predict?top_k=many", b'{"instances": [[[0]]]}', JSON, 422,
     ["top_k"]),
]
# fmt: on


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "words"),
    [b[1:] for b in BAD],
    ids=[b[0] for b in BAD],
)
def test_bad_input_gets_a_4xx_naming_the_field(client, method, path, body, headers, status, words):
    response = client.request(method, path.format(name=NAME), content=body, headers=headers)
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message, (word, message)


def test_body_over_limit_without_content_length(client):
    """A streamed body has no Content-Length: the limit applies as the bytes come in."""
    chunks = iter([b"[" + b"0.5," * 20_000] * 5 + [b"0]"])
    response = client.post(INFER.format(name=NAME), content=chunks)
    assert response.status_code == 413 and "MAX_BODY_BYTES" in response.json()["error"]


def test_float32_overflow_is_a_400_also_where_warnings_are_errors(client):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        body = infer_body().replace(b"0.5", b"1e39", 1)
        response = client.post(INFER.format(name=NAME), content=body)
    assert response.status_code == 400 and "NaN or infinity" in response.json()["error"]


# --- fuzzed bad input: every answer is a 4xx that names the field, in plain words ---------------

# What a message must never show: an object's repr (`<_io.BytesIO object at 0x7f8e...>`), a memory
# address, a traceback, a class.
INTERNALS = re.compile(r"\b0x[0-9a-fA-F]{4,}|object at|Traceback|File \"|<class |<[\w.]+ object")


def _good_tensor() -> dict:
    return {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 64}


def _header_png(width: int, height: int, idat: bool = True) -> bytes:
    """A PNG that declares width x height, with one empty image data chunk (or none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + (chunk(b"IDAT", zlib.compress(b"")) if idat else b"")


def _fuzzed_infer() -> list[tuple[str, bytes, str]]:
    """(case id, body, the field the error must name first) for /v2/models/{name}/infer: each
    field of a valid request replaced by wrong values, then bodies that are not requests."""
    cases = []
    field_values = {
        "name": [5, None, "", "pixels", [], {}],
        "datatype": [None, "FP64", "fp32", 1, []],
        "shape": [
            None,
            "1,1,8,8",
            [1, 1, 8],
            [1.5, 1, 8, 8],
            [0, 1, 8, 8],
            [-1, 1, 8, 8],
            [True, 1, 8, 8],
            [10**12, 1, 8, 8],
            [1, 1, 8, "8"],
            {},
            [[1], 1, 8, 8],
        ],
        "data": [
            None,
            "x",
            5,
            {},
            [],
            [None] * 64,
            [[0.5, 0.5], [0.5]],
            [{}] * 64,
            [[0.5] * 64] * 2,
            ["x"] * 64,
            [[[[[]]]]],
        ],
        "parameters": [[], "x", 5, {"binary_data_size": "64"}, {"binary_data_size": -1}],
    }
    for key, values in field_values.items():
        for i, value in enumerate(values):
            tensor = {**_good_tensor(), key: value}
            body = json.dumps({"inputs": [tensor]}).encode()
            # binary_data_size beside data: the message names the tensor, and both keys
            field = "inputs[0]" if "binary_data_size" in str(value) else f"inputs[0].{key}"
            cases.append((f"inputs[0].{key}-{i}", body, field))
    request_values = {
        "inputs": [None, {}, "x", [], [None], [[]], [5], [_good_tensor(), _good_tensor()]],
        "outputs": [
            "x",
            {},
            [5],
            [{"name": 5}],
            [{"name": "scores"}],
            [{"name": "logits", "parameters": []}],
            [{"name": "logits", "parameters": {"classification": -1}}],
            [{"name": "logits", "parameters": {"classification": "3"}}],
        ],
        "id": [5, [], {}, None],
        "parameters": [[], "x", 5],
    }
    for key, values in request_values.items():
        for i, value in enumerate(values):
            body = json.dumps({"inputs": [_good_tensor()], key: value}).encode()
            cases.append((f"{key}-{i}", body, key))
    rng = random.Random(19)
    not_requests = [b"", b"null", b"[]", b'"inputs"', b"5", b"{", b"\xff\xfe\x00"]
    not_requests += [rng.randbytes(n) for n in (1, 16, 256, 4096)]
    for i, body in enumerate(not_requests):
        cases.append((f"body-{i}", body, "request body"))
    return cases


def _fuzzed_predict() -> list[tuple[str, bytes, dict, str]]:
    """(case id, body, headers, the field the error must name first) for /predict."""
    good = png(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8))
    rng = random.Random(19)
    files = [("empty.png", b""), ("notes.txt", b"hello, world\n"), ("sig.png", good[:8])]
    files += [(f"random{n}.bin", rng.randbytes(n)) for n in (1, 7, 64, 1024, 100_000)]
    # Cut inside the header and at points inside the image data.
    files += [(f"cut{n}.png", good[:n]) for n in (16, 30, 60, len(good) // 2, len(good) * 3 // 4)]
    files += [
        ("huge.png", _header_png(100_000, 100_000)),
        ("wide.png", _header_png(70_000, 1_000)),
        ("zero.png", _header_png(0, 0)),
        ("header-only.png", _header_png(8, 8, idat=False)),
        ("garbage.gif", b"GIF89a" + rng.randbytes(40)),
        ("garbage.jpg", b"\xff\xd8\xff\xe0" + rng.randbytes(40)),
        ("bad-crc.png", good[:29] + bytes([good[29] ^ 0xFF]) + good[30:]),
    ]
    cases = [(name, *multipart([(name, data)]), f"files[0] ({name})") for name, data in files]
    # A good image first: the error names the second file, not the first.
    body, headers = multipart([("ok.png", good), ("notes.txt", b"hello")])
    cases.append(("second-file", body, headers, "files[1] (notes.txt)"))
    cases.append(("no-boundary", b"--x\r\n\r\n", {"Content-Type": "multipart/form-data"}, "files"))
    json_bodies = [
        (b"null", "instances"),
        (b'"x"', "instances"),
        (b"[]", "instances"),
        (b'{"instances": "x"}', "instances"),
        (b'{"instances": {}}', "instances"),
        (b'{"instances": []}', "instances"),
        (b'{"instances": [null]}', "instances[0]"),
        (b'{"instances": [{"a": 1}]}', "instances[0]"),
        (b'{"instances": [[["a"]]]}', "instances[0]"),
        (b'{"instances": [true]}', "instances[0]"),
        (b'{"instances": [[[[[1]]]]]}', "instances[0]"),
        (b'{"instances": [[]]}', "instances[0]"),
        (b'{"instances": [[[1, 2], [3]]]}', "instances[0]"),
        (b'{"instances": [[[-1]]]}', "instances[0]"),
        (b'{"instances": [[[1e308]]]}', "instances[0]"),
        (b'{"instances": [[[0]], [[0, 1], [2]]]}', "instances[1]"),
        (b"{", "request body"),
        (b"\xff\xfe", "request body"),
        (rng.randbytes(64), "request body"),
    ]
    for i, (body, field) in enumerate(json_bodies):
        cases.append((f"json-{i}", body, {"Content-Type": "application/json"}, field))
    return cases


def _check_plain_4xx(response, field: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    message = response.json()["error"]
    # the field, or a part of it: `inputs[0].shape[0]: ...` names `inputs[0].shape`
    assert re.match(re.escape(field) + r"[:.\[]", message), (field, message)
    assert not INTERNALS.search(message), message
    assert "\n" not in message, message


INFER_FUZZ = _fuzzed_infer()
PREDICT_FUZZ = _fuzzed_predict()


@pytest.mark.parametrize(
    ("body", "field"), [c[1:] for c in INFER_FUZZ], ids=[c[0] for c in INFER_FUZZ]
)
def test_fuzzed_infer_requests_get_a_plain_4xx_naming_the_field(client, body, field):
    _check_plain_4xx(client.post(INFER.format(name=NAME), content=body), field)


@pytest.mark.parametrize(
    ("body", "headers", "field"), [c[1:] for c in PREDICT_FUZZ], ids=[c[0] for c in PREDICT_FUZZ]
)
def test_fuzzed_uploads_to_predict_get_a_plain_4xx_naming_the_field(client, body, headers, field):
    _check_plain_4xx(client.post("/predict", content=body, headers=headers), field)


def test_a_text_file_is_named_without_the_servers_internals(client):
    """Issue 19: Pillow's message for an unknown format quotes `<_io.BytesIO object at 0x...>`."""
    response = client.post("/predict", **_files_kwargs([("notes.txt", b"hello, world")]))
    assert response.status_code == 400
    message = response.json()["error"]
    assert message.startswith("files[0] (notes.txt): cannot read image: not a whole image")
    assert "BytesIO" not in message and "0x" not in message, message


def _files_kwargs(files: list[tuple[str, bytes]]) -> dict:
    body, headers = multipart(files)
    return {"content": body, "headers": headers}


def test_an_object_repr_in_any_error_is_left_out():
    from mlproject.serve.errors import RequestError, error_response

    raw = "files[0]: cannot identify image file <_io.BytesIO object at 0x7f8e12345678>"
    assert RequestError(400, raw).message == "files[0]: cannot identify image file"
    body = json.loads(error_response(400, "x: bad value at 0x7f8e12345678 (0xdeadbeefcafe)").body)
    assert body == {"error": "x: bad value ()"}


# --- the prediction log ------------------------------------------------------------------------


def test_prediction_log_records_every_item_of_both_apis(model_files, tmp_path):
    model, card = model_files
    settings = Settings(model=model, card=card, prediction_log=tmp_path / "log")
    x = np.random.default_rng(7).standard_normal((3, 1, 8, 8)).astype(np.float32)
    body, headers = multipart([("a.png", png(np.zeros((8, 8), np.uint8)))])
    with TestClient(create_app(settings)) as client:
        # The request's id: the body's `id`, else the X-Request-ID header (serve.ids).
        r = client.post(INFER.format(name=NAME), content=infer_body(x, id="req-9"))
        assert r.status_code == 200 and r.json()["id"] == "req-9"
        r = client.post(
            INFER.format(name=NAME), content=infer_body(x), headers={"X-Request-ID": "hdr-1"}
        )
        assert r.status_code == 200 and r.json()["id"] == "hdr-1"
        r = client.post("/predict", content=body, headers={**headers, "X-Request-ID": "one"})
        assert r.status_code == 200 and r.json()["id"] == "one"
        assert r.json()["predictions"][0]["id"] == "one"
    # Leaving the client ran the lifespan's end: the log is drained and its writer stopped.
    lines = (tmp_path / "log/predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["route"] for r in records] == ["infer"] * 6 + ["predict"]
    assert [r["id"] for r in records] == [
        *(f"{rid}#{i}" for rid in ("req-9", "hdr-1") for i in range(3)),
        "one",
    ]
    assert {r["model"] for r in records} == {NAME}
    assert all(0 < r["confidence"] <= 1 and r["predicted"] in "0123456789" for r in records)


# --- metrics -----------------------------------------------------------------------------------


def series(client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_count_requests_errors_and_predictions(client, card):
    before = series(client)
    x = np.zeros((4, 1, 8, 8), dtype=np.float32)
    for _ in range(3):
        assert client.post(INFER.format(name=NAME), content=infer_body(x)).status_code == 200
    assert client.post(INFER.format(name=NAME), content=b"{").status_code == 400
    assert client.post("/v2/models/nope/infer", content=infer_body()).status_code == 404
    after = series(client)

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    route = 'route="/v2/models/{name}/infer"'
    assert delta(f'mlserve_requests_total{{method="POST",{route},status="200"}}') == 3
    assert delta(f'mlserve_requests_total{{method="POST",{route},status="400"}}') == 1
    assert delta(f'mlserve_requests_total{{method="POST",{route},status="404"}}') == 1
    assert delta(f"mlserve_request_duration_seconds_count{{{route}}}") == 5
    assert delta('mlserve_batch_size_count{api="infer"}') == 3
    assert delta('mlserve_batch_size_sum{api="infer"}') == 12
    predicted = [k for k in after if k.startswith("mlserve_predictions_total")]
    assert sum(after[k] - before.get(k, 0) for k in predicted) == 12
    assert after["mlserve_inference_duration_seconds_count"] >= 3
    assert after["mlserve_requests_in_progress"] == 1  # this /metrics request
    assert not [k for k in after if k.startswith("mlserve_requests_total") and 'status="5' in k]
    info = [k for k in after if k.startswith("mlserve_model_info")]
    assert len(info) == 1 and card["sha256"] in info[0]
