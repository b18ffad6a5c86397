"""The inference server, as clients see it: the Open Inference Protocol (with Triton's own
client, binary and JSON), the friendly API against the evaluate stage's predictions, the model
card, OpenAPI, metrics, and bad input of every kind answered with a 4xx naming the field.

One real server (uvicorn, onnxruntime) runs on a free loopback port for the whole module, on
the model that the pipeline fixture exported.
"""

from __future__ import annotations

import csv
import gzip
import http.client
import io
import json
import struct
import zlib

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from mlproject.core.preprocess import InputSpec, normalize, open_image, to_pixels
from mlproject.serve.process import ServerProcess

pytestmark = pytest.mark.slow
MAX_BATCH, MAX_BODY = 64, 200_000


@pytest.fixture(scope="module")
def card(pipeline_repo):
    return json.loads((pipeline_repo / "models/model_card.json").read_text())


@pytest.fixture(scope="module")
def server(pipeline_repo):
    env = {"MAX_BATCH": str(MAX_BATCH), "MAX_BODY_BYTES": str(MAX_BODY)}
    with ServerProcess(
        pipeline_repo / "models/model.onnx",
        pipeline_repo / "models/model_card.json",
        env=env,
        cwd=pipeline_repo,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return triton.InferenceServerClient(f"{server.host}:{server.port}")


@pytest.fixture(scope="module")
def session(pipeline_repo):
    return ort.InferenceSession(
        str(pipeline_repo / "models/model.onnx"), providers=["CPUExecutionProvider"]
    )


def request(server, method, path, body=b"", headers=None):
    """A raw HTTP request (no client library adding headers); returns (status, headers, body)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def infer_body(shape=(1, 1, 8, 8), data=None, datatype="FP32", name="input", **extra):
    n = int(np.prod(shape))
    data = [0.5] * n if data is None else data
    return json.dumps(
        {
            "inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}],
            **extra,
        }
    ).encode()


def multipart(files: list[tuple[str, bytes]], field="files") -> tuple[bytes, dict]:
    boundary = "testboundary7d1f"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename='
        f'"{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {
        "Content-Type": f"multipart/form-data; boundary={boundary}"
    }


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


# --- Open Inference Protocol -------------------------------------------------------------------


def test_health_and_metadata_with_triton_client(client, card):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(card["name"])
    meta = client.get_server_metadata()
    assert meta["name"] == "mlproject" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(card["name"])
    assert model["name"] == card["name"] and model["versions"] == [card["sha256"][:12]]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert {"name": "logits", "datatype": "FP32", "shape": [-1, 10]} in model["outputs"]
    versioned = client.get_model_metadata(card["name"], model_version=model["versions"][0])
    assert versioned == model
    assert client.is_model_ready(card["name"], model_version=model["versions"][0])


def test_health_endpoints_raw(server, card):
    assert json.loads(request(server, "GET", "/v2/health/live")[2]) == {"live": True}
    assert json.loads(request(server, "GET", "/v2/health/ready")[2]) == {"ready": True}
    status, _, body = request(server, "GET", f"/v2/models/{card['name']}/ready")
    assert status == 200 and json.loads(body) == {"name": card["name"], "ready": True}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_with_triton_client_matches_onnxruntime(client, card, session, binary):
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    # The client's defaults: binary input, no outputs named -> all outputs, binary.
    outputs = None if binary else [triton.InferRequestedOutput("logits", binary_data=False)]
    result = client.infer(card["name"], [inp], outputs=outputs, request_id="req-7")
    expected = session.run(["logits"], {"input": x})[0]
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == card["name"]
    if binary:
        assert "Inference-Header-Content-Length" not in response  # parsed by the client
        names = [o["name"] for o in response["outputs"]]
        assert names == [o.name for o in session.get_outputs()]


def test_infer_classification_extension(client, card, session):
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    for binary in (True, False):
        out = triton.InferRequestedOutput("logits", binary_data=binary, class_count=2)
        top = client.infer(card["name"], [inp], outputs=[out]).as_numpy("logits")
        logits = session.run(["logits"], {"input": x})[0]
        assert top.shape == (3, 2)
        for row, want in zip(top, np.argsort(-logits, axis=1)[:, :2], strict=True):
            labels = [(v.decode() if isinstance(v, bytes) else v).split(":") for v in row]
            assert [int(lab[1]) for lab in labels] == want.tolist()
            assert [lab[2] for lab in labels] == [card["classes"][i] for i in want]


def test_infer_without_content_type_and_with_gzip(server, card, session):
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    body = infer_body(data=x.tolist(), outputs=[{"name": "logits"}])
    status, headers, raw = request(server, "POST", f"/v2/models/{card['name']}/infer", body)
    assert status == 200, raw
    assert headers["content-type"] == "application/json"
    got = json.loads(raw)["outputs"][0]
    assert got["shape"] == [1, 10]
    expected = session.run(["logits"], {"input": x.reshape(1, 1, 8, 8)})[0]
    np.testing.assert_allclose(got["data"], expected.ravel(), rtol=1e-5, atol=1e-5)
    status, _, raw2 = request(
        server,
        "POST",
        f"/v2/models/{card['name']}/infer",
        gzip.compress(body),
        {"Content-Encoding": "gzip"},
    )
    assert status == 200 and json.loads(raw2) == json.loads(raw)


def test_binary_request_by_hand(server, card, session):
    """The binary extension without a client library: JSON header, then raw tensors."""
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
    )
    status, headers, raw = request(
        server,
        "POST",
        f"/v2/models/{card['name']}/infer",
        header.encode() + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 200, raw
    n = int(headers["inference-header-content-length"])
    meta = json.loads(raw[:n])
    size = meta["outputs"][0]["parameters"]["binary_data_size"]
    got = np.frombuffer(raw[n : n + size], dtype="<f4").reshape(meta["outputs"][0]["shape"])
    np.testing.assert_allclose(got, session.run(["logits"], {"input": x})[0], rtol=1e-5, atol=1e-5)


# --- the friendly API --------------------------------------------------------------------------


def test_predict_matches_the_evaluate_stage(server, pipeline_repo, card):
    meta = json.loads((pipeline_repo / "outputs/prepared/meta.json").read_text())
    files = meta["files"]["test"]
    with open(pipeline_repo / "reports/eval/predictions.csv") as fh:
        expected = [row["predicted"] for row in csv.DictReader(fh)]
    assert len(files) == len(expected) > 0
    got = []
    for start in range(0, len(files), MAX_BATCH):
        chunk = files[start : start + MAX_BATCH]
        body, headers = multipart([(f, (pipeline_repo / "data" / f).read_bytes()) for f in chunk])
        status, _, raw = request(server, "POST", "/predict?top_k=2", body, headers)
        assert status == 200, raw
        result = json.loads(raw)
        assert result["model"] == card["name"] and result["model_sha256"] == card["sha256"]
        for item, name in zip(result["predictions"], chunk, strict=True):
            assert item["input"].endswith(f"({name})")
            assert len(item["top_k"]) == 2 and item["top_k"][0]["class"] == item["class"]
            assert item["top_k"][0]["probability"] >= item["top_k"][1]["probability"]
            got.append(item["class"])
    assert got == expected


def test_predict_json_pixels_equal_the_file(server, pipeline_repo):
    path = pipeline_repo / "data/3" / sorted((pipeline_repo / "data/3").iterdir())[0].name
    pixels = np.asarray(Image.open(path).convert("L"))
    body, headers = multipart([(path.name, path.read_bytes())])
    by_file = json.loads(request(server, "POST", "/predict?top_k=10", body, headers)[2])
    status, _, raw = request(
        server,
        "POST",
        "/predict?top_k=10",
        json.dumps({"instances": [pixels.tolist()]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200, raw
    by_json = json.loads(raw)["predictions"][0]
    assert by_json["top_k"] == by_file["predictions"][0]["top_k"]
    assert by_json["input"] == "instances[0]"


def test_predict_preprocesses_like_training(server, pipeline_repo, card, session):
    """A big RGB image: the server resizes and converts it exactly as mlproject.core.preprocess."""
    rgb = np.random.default_rng(4).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    spec = InputSpec.from_card(card)
    x = normalize(
        to_pixels(open_image(png(rgb)), spec.height, spec.width, spec.channels, spec.resize),
        spec.mean,
        spec.std,
    )[None]
    logits = session.run(["logits"], {"input": x})[0][0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    body, headers = multipart([("big.png", png(rgb))])
    got = json.loads(request(server, "POST", "/predict", body, headers)[2])["predictions"][0]
    assert got["class"] == card["classes"][int(probs.argmax())]
    assert got["confidence"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert len(got["top_k"]) == 3  # TOP_K default


def test_model_card_openapi_and_docs(server, card):
    status, _, raw = request(server, "GET", "/model")
    assert status == 200 and json.loads(raw) == card
    spec = json.loads(request(server, "GET", "/openapi.json")[2])
    for path in (
        "/v2/models/{name}/infer",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/predict",
        "/model",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert "/bench/constant" not in spec["paths"]
    status, _, raw = request(server, "GET", "/docs")
    assert status == 200 and b"swagger" in raw.lower()


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
def test_bad_input_gets_a_4xx_naming_the_field(
    server, card, method, path, body, headers, status, words
):
    got, _, raw = request(server, method, path.format(name=card["name"]), body, headers)
    assert got == status, raw
    message = json.loads(raw)["error"]
    for word in words:
        assert word in message, (word, message)


def test_body_over_limit_without_content_length(server, card):
    """A chunked body has no Content-Length: the limit applies as the bytes stream in."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/v2/models/{card['name']}/infer",
            body=iter([b"[" + b"0.5," * 20_000] * 5 + [b"0]"]),
            encode_chunked=True,
            headers={"Transfer-Encoding": "chunked"},
        )
        resp = conn.getresponse()
        assert resp.status == 413 and "MAX_BODY_BYTES" in json.loads(resp.read())["error"]
    finally:
        conn.close()


def test_triton_client_sees_errors(client, card):
    x = np.zeros((1, 1, 8, 9), dtype=np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match=r"inputs\[0\]\.shape"):
        client.infer(card["name"], [inp])
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")


# --- metrics, after all of the above -----------------------------------------------------------


def test_metrics_count_everything_and_no_5xx(server, card):
    status, headers, raw = request(server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = raw.decode()
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            series[name] = float(value)
    infer_ok = 'mlserve_requests_total{method="POST",route="/v2/models/{name}/infer",status="200"}'
    assert series[infer_ok] >= 5
    assert series['mlserve_requests_total{method="POST",route="/predict",status="400"}'] >= 5
    assert not [k for k in series if k.startswith("mlserve_requests_total") and 'status="5' in k]
    assert series['mlserve_request_duration_seconds_count{route="/predict"}'] >= 5
    assert series["mlserve_inference_duration_seconds_count"] >= 5
    assert series['mlserve_batch_size_count{api="predict"}'] >= 5
    predicted = sum(v for k, v in series.items() if k.startswith("mlserve_predictions_total"))
    assert predicted >= 270
    info = [k for k in series if k.startswith("mlserve_model_info")]
    assert len(info) == 1 and card["sha256"] in info[0] and f'name="{card["name"]}"' in info[0]
    assert "process_resident_memory_bytes" in series
    # ...and the server is still serving.
    assert json.loads(request(server, "GET", "/v2/health/ready")[2]) == {"ready": True}
